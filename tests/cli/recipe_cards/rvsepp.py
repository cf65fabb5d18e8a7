"""RVSE++ (SelHN) recipe card: AAA-Zheng/RVSEPP, identical for Flickr30K and MSCOCO (only --data_name changes)."""

METHOD = "rvsepp"
SOURCES = (
    "AAA-Zheng/RVSEPP:train.py:25-57 (margin 0.2, epsilon 0.01, 30 epochs, lr_update 15, batch 128, lr 5e-4, clip 2)",
    "AAA-Zheng/RVSEPP:train.py:85-112,231-241 (lr x 0.1 once at epoch 15; best rsum on dev kept, no early stop)",
    "AAA-Zheng/RVSEPP:vse.py:47-49 (AdamW, torch's weight decay 0.01 on every parameter)",
    "AAA-Zheng/RVSEPP:image_caption.py:41-43,53-98,139-141 (dev = first 5,000 captions; region drop 0.2; token "
    "perturbation 0.2 = 50 % mask / 10 % random / 40 % delete; drop_last in training)",
    "AAA-Zheng/RVSEPP:loss.py:12-24 (only the diagonal is positive)",
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
    "trainer.max_epochs": 30,
    "data.init_args.drop_last": True,
    "model.class_path": "leccr_lightning.methods.rvsepp.RVSEPlusPlus",
    "model.init_args.text_model": "gru",
    "model.init_args.image_mlp": "residual",
    "model.init_args.gpo_dim": 32,
    "model.init_args.no_decay_keys": [],
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.SelHNObjective",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.selective_eps": 0.01,
    "model.init_args.augmentation.init_args.region_drop": 0.2,
    "model.init_args.augmentation.init_args.token_perturb": 0.2,
    "model.init_args.augmentation.init_args.mask_share": 0.5,
    "model.init_args.augmentation.init_args.random_share": 0.1,
    "model.init_args.optimizer.class_path": "torch.optim.AdamW",
    "model.init_args.optimizer.init_args.lr": 0.0005,
    "model.init_args.optimizer.init_args.weight_decay": 0.01,
    "model.init_args.scheduler.class_path": "torch.optim.lr_scheduler.MultiStepLR",
    "model.init_args.scheduler.init_args.milestones": [15],
    "model.init_args.scheduler.init_args.gamma": 0.1,
}
RECIPES = {
    "f30k": {"data.init_args.collection": "f30k_precomp", "data.init_args.test_split": "test"},
    "coco": {"data.init_args.collection": "coco_precomp", "data.init_args.test_split": "testall"},
}
