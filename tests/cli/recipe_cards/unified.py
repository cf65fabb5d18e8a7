"""Unified pair-similarity loss recipe card: AAA-Zheng/MV-VSE (single view, --loss unified_max, k = 1), identical
for Flickr30K and MSCOCO; the unified-loss paper has no code of its own."""

METHOD = "unified"
SOURCES = (
    "AAA-Zheng/MV-VSE:train.py:40-77 (tau 0.01, margin 0.2, 20 epochs, lr_update 20, batch 128, lr 5e-4, clip 2)",
    "AAA-Zheng/MV-VSE:model.py:25-100 (VSE++ encoder with k = 1), model.py:191-282 (UnifiedLoss), model.py:134 (Adam)",
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
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.UnifiedObjective",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.tau": 0.01,
    "model.init_args.optimizer.class_path": "torch.optim.Adam",
    "model.init_args.optimizer.init_args.lr": 0.0005,
    "model.init_args.optimizer.init_args.weight_decay": 0,
}
RECIPES = {
    "f30k": {"data.init_args.collection": "f30k_precomp", "data.init_args.test_split": "test"},
    "coco": {"data.init_args.collection": "coco_precomp", "data.init_args.test_split": "testall"},
}
