"""Listwise ITR recipe card: AAA-Zheng/Listwise_ITR, identical for Flickr30K and MSCOCO."""

METHOD = "listwise"
SOURCES = (
    "AAA-Zheng/Listwise_ITR:train.py:32-65 (margin 0.2, tau 0.01, 20 epochs, lr_update 20, batch 128, lr 5e-4, clip 2; "
    "--sndcg_weight read at model.py:129 but never declared: 0.5 is ours)",
    "AAA-Zheng/Listwise_ITR:model.py:24-95 (VSE++ encoder), model.py:123-257 (TripletSNDCGLoss: (1 - w) Triplet-HN + w "
    "S-NDCG, RSC relevance (1 + max cos) / 2, shared-tie IDCG, one relevance matrix for both directions), "
    "model.py:284 (Adam)",
    "AAA-Zheng/Listwise_ITR:data.py:26,35-36,54-59 (text_emb_path rows = train_caps.txt lines; dev = first 5,000 "
    "captions)",
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
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.ListwiseObjective",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.tau": 0.01,
    "model.init_args.objective.init_args.sndcg_weight": 0.5,
    "model.init_args.objective.init_args.k": None,
    "model.init_args.objective.init_args.gain": "exp2",
    "model.init_args.objective.init_args.ideal_ties": "shared",
    "model.init_args.objective.init_args.legacy_untransposed": True,
    "model.init_args.objective.init_args.relevance.class_path": (
        "leccr_lightning.metrics.relevance.CaptionEmbeddingRelevance"
    ),
    "model.init_args.objective.init_args.relevance.init_args.embeddings": "train_caps_emb.npy",
    "model.init_args.objective.init_args.relevance.init_args.mapping": "shifted",
    "model.init_args.optimizer.class_path": "torch.optim.Adam",
    "model.init_args.optimizer.init_args.lr": 0.0005,
    "model.init_args.optimizer.init_args.weight_decay": 0,
}
RECIPES = {
    "f30k": {"data.init_args.collection": "f30k_precomp", "data.init_args.test_split": "test"},
    "coco": {"data.init_args.collection": "coco_precomp", "data.init_args.test_split": "testall"},
}
