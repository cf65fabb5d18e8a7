"""BCLS recipe card: AAA-Zheng/ITM_CLS (the released BCLS code), identical for Flickr30K and MSCOCO."""

METHOD = "bcls"
SOURCES = (
    "AAA-Zheng/ITM_CLS:train.py:42-77 (label text, margin 0.2, gap 0.3, 20 epochs, lr_update 20, batch 128, "
    "lr 5e-4, clip 2)",
    "AAA-Zheng/ITM_CLS:model.py:16-77 (VSE++ encoder), model.py:80-163 (RCLoss: Triplet-HN + Kendall hinge, weight 1; "
    "raw inner-product labels max over the image's 5 captions; one image-by-text label matrix for both directions)",
    "AAA-Zheng/ITM_CLS:data.py:31-38,59-64 (text_emb_path rows = train_caps.txt lines; dev = first 5,000 captions)",
)
COMMON = {
    "trainer.accelerator": "auto",
    "trainer.devices": 1,
    "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/sumr",
    "trainer.callbacks.ModelCheckpoint.init_args.mode": "max",
    "data.init_args.batch_size": 128,
    "data.init_args.roles": ["source"],
    "data.init_args.val_split": "dev",
    "data.init_args.val_max_images": 1000,
    "model.init_args.embed_dim": 1024,
    "model.init_args.word_dim": 300,
    "model.init_args.train_roles": ["source"],
    "model.init_args.mask_same_item": False,
    "model.init_args.gradient_clip_norm": 2.0,
    "trainer.max_epochs": 20,
    "model.class_path": "leccr_lightning.methods.rvsepp.VSEPlusPlus",
    "model.init_args.scheduler": None,
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.BCLSObjective",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.binary_mining": "hardest",
    "model.init_args.objective.init_args.kendall_weight": 1.0,
    "model.init_args.objective.init_args.gap": 0.3,
    "model.init_args.objective.init_args.form": "hinge",
    "model.init_args.objective.init_args.kendall_margin": 0.0,
    "model.init_args.objective.init_args.window": None,
    "model.init_args.objective.init_args.hard_mining": False,
    "model.init_args.objective.init_args.legacy_untransposed": True,
    "model.init_args.objective.init_args.relevance.class_path": (
        "leccr_lightning.metrics.relevance.CaptionEmbeddingRelevance"
    ),
    "model.init_args.objective.init_args.relevance.init_args.embeddings": "train_caps_emb.npy",
    "model.init_args.objective.init_args.relevance.init_args.mapping": "cos",
    "model.init_args.optimizer.class_path": "torch.optim.Adam",
    "model.init_args.optimizer.init_args.lr": 0.0005,
    "model.init_args.optimizer.init_args.weight_decay": 0,
}
RECIPES = {
    "f30k": {"data.init_args.collection": "f30k_precomp", "data.init_args.test_split": "test"},
    "coco": {"data.init_args.collection": "coco_precomp", "data.init_args.test_split": "testall"},
}
