"""MT baseline recipe card ([recon]): no official code; the NRCCR-like recipe the spec proposes (ccr_methods §2.3, §7
table, §4.2 "Recipe"), with our selection on validation SumR and a constant learning rate. CL2CM and DCOT share it."""

METHOD = "baseline"

SOURCES = (
    "[recon] no official code: ccr_methods §7 'optim: NRCCR-like' and §4.2 'inherit NRCCR (Adam 1e-4, batch 128, "
    "margin 0.2, 50 epochs, val-selected)'",
    "the NRCCR values it inherits: LiJiaBei-7/nrccr:train_base.py:30-56 (Adam 1e-4, grad_clip 2, batch 128, 50 "
    "epochs, dropout 0.2, 0-1536 mappings), do_all_multi30k.sh:27 / do_all_vatex.sh:26 (layer_list 3-11 / 5-11)",
    "[recon] ours, not NRCCR's: constant learning rate, selection and early stop (patience 10) on validation SumR, "
    "text policy none, same-item masking on",
)
NRCCR_LIKE = {
    "model.init_args.optimizer.class_path": "torch.optim.Adam",
    "model.init_args.optimizer.init_args.lr": 1e-4,
    "model.init_args.scheduler": None,
    "model.init_args.gradient_clip_norm": 2.0,
    "data.init_args.batch_size": 128,
    "trainer.max_epochs": 50,
    "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/sumr",
    "trainer.callbacks.EarlyStopping.init_args.monitor": "val/sumr",
    "trainer.callbacks.EarlyStopping.init_args.patience": 10,
    "data.init_args.normalization": "none",
    "model.init_args.mask_same_item": True,
    "model.init_args.embed_dim": 1536,
    "model.init_args.batch_norm": True,
    "model.init_args.dropout": 0.2,
    "model.init_args.visual_hidden": 1024,
    "model.init_args.visual_heads": 8,
}
IMAGE = {"model.init_args.trainable_layers": [3, 4, 5, 6, 7, 8, 9, 10, 11], "model.init_args.visual_encoder": "linear"}
VIDEO = {
    "model.init_args.trainable_layers": [5, 6, 7, 8, 9, 10, 11],
    "model.init_args.visual_encoder": "frame_attention",
}
IMAGE_DATASETS = (
    "multi30k_de",
    "multi30k_fr",
    "multi30k_cs",
    "multi30k_task1_de",
    "multi30k_task1_fr",
    "multi30k_task1_cs",
    "mscoco_ja",
    "mscoco_zh",
)
RIVRL_VIDEO = {  # LiJiaBei-7/rivrl:do_all_vatex.sh (visual_rnn_size 512, visual_mapping 2048, kernel 3 stride 2)
    "model.init_args.trainable_layers": [5, 6, 7, 8, 9, 10, 11],
    "model.init_args.visual_encoder": "rivrl",
    "model.init_args.visual_options": {
        "preview_size": 512,
        "intensive_dim": 2048,
        "clip_kernel_sizes": [3],
        "clip_strides": [2],
        "preview_dropout": 0.2,
    },
}
DATASET_DELTAS = {
    **{name: IMAGE for name in IMAGE_DATASETS},
    "msrvtt10kcn_zh": VIDEO,
    "vatex_zh": VIDEO,
}

COMMON = {
    **NRCCR_LIKE,
    "model.class_path": "leccr_lightning.methods.baseline.DualEncoderBaseline",
    "model.init_args.target_weight": 0.6,
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.TripletObjective",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.mining": "hardest",
}
RECIPES = {**DATASET_DELTAS, "vatex_zh_rivrl": RIVRL_VIDEO}
