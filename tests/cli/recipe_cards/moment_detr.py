"""Moment-DETR: the released QVHighlights recipe, and the DETR family's Charades-STA / TACoS recipes (CG-DETR's
scripts, the reference the QD-DETR lineage trains with on those datasets; spec grounding_methods §2.4)."""

METHOD = "moment_detr"
SOURCES = (
    "jayleicn/moment_detr:moment_detr/config.py:35-133 (seed 2018, lr 1e-4, lr_drop 400, wd 1e-4, 200 epochs, "
    "batch 32, grad_clip 0.1, max_v_l 75, clip_length 2, max_windows 5, sizes, loss weights, matching costs)",
    "jayleicn/moment_detr:moment_detr/inference.py:201-203 (AdamW over every parameter, StepLR(lr_drop))",
    "jayleicn/moment_detr:moment_detr/inference.py:105, 152-157 (float16 saliency; clamp [0, 150] s, 2-s rounding)",
    "jayleicn/moment_detr:moment_detr/train.py:131-157 (validation every 5 epochs, best MR-full-mAP)",
    "jayleicn/moment_detr:moment_detr/start_end_dataset.py:84-92, 154-172 (TEF; windows / feature length)",
    "wjun0830/CGDETR:cg_detr/scripts/charades_sta/train.sh:9-80 (eval on test, clip_length 1, max_v_l -1, lr 2e-4, "
    "lr_drop 400, 200 epochs, lw_saliency 4)",
    "wjun0830/CGDETR:cg_detr/scripts/tacos/train.sh:9-80 (eval on test, clip_length 2, max_v_l -1, lr 2e-4, "
    "lr_drop 200, 200 epochs, lw_saliency 4)",
    "wjun0830/CGDETR:cg_detr/inference.py:286-310 (Charades SF+C: clamp [0, 150], 1-s rounding; TACoS: 2-s rounding)",
    "wjun0830/CGDETR:cg_detr/train.py:134-160, config.py:56 (validation every 5 epochs, best (R1@0.5 + R1@0.7) / 2)",
    "wjun0830/CGDETR:cg_detr/start_end_dataset.py:85-86, 226-251 (max_v_l -1 = no cut; window clips of duration / "
    "n_clips, 2 + 2 hinge clips)",
)
MODEL = "leccr_lightning.methods.grounding.moment_detr.MomentDETR"

COMMON = {
    "seed_everything": 2018,
    "model.class_path": MODEL,
    "model.init_args.text_dim": 512,
    "model.init_args.hidden_dim": 256,
    "model.init_args.nheads": 8,
    "model.init_args.enc_layers": 2,
    "model.init_args.dec_layers": 2,
    "model.init_args.dim_feedforward": 1024,
    "model.init_args.dropout": 0.1,
    "model.init_args.input_dropout": 0.5,
    "model.init_args.n_input_proj": 2,
    "model.init_args.num_queries": 10,
    "model.init_args.span_loss_coef": 10.0,
    "model.init_args.giou_loss_coef": 1.0,
    "model.init_args.label_loss_coef": 4.0,
    "model.init_args.eos_coef": 0.1,
    "model.init_args.saliency_margin": 0.2,
    "model.init_args.set_cost_span": 10.0,
    "model.init_args.set_cost_giou": 1.0,
    "model.init_args.set_cost_class": 4.0,
    "model.init_args.aux_loss": True,
    "model.init_args.nms_threshold": -1.0,
    "model.init_args.saliency_fp16": True,
    "model.init_args.optimizer.class_path": "torch.optim.AdamW",
    "model.init_args.optimizer.init_args.weight_decay": 1e-4,
    "model.init_args.scheduler.class_path": "torch.optim.lr_scheduler.StepLR",
    "model.init_args.scheduler.init_args.gamma": 0.1,
    "model.init_args.scheduler_interval": "epoch",
    "model.init_args.no_decay_keys": [],
    "model.init_args.gradient_clip_norm": 0.1,
    "data.init_args.batch_size": 32,
    "data.init_args.max_q_l": 32,
    "data.init_args.max_windows": 5,
    "data.init_args.use_tef": True,
    "data.init_args.normalize_video": True,
    "data.init_args.normalize_text": True,
    "data.init_args.span_normaliser": "features",
    "trainer.max_epochs": 200,
    "trainer.check_val_every_n_epoch": 5,
    "trainer.callbacks.ModelCheckpoint.init_args.mode": "max",
}

RECIPES = {
    "qvhighlights": {
        "model.init_args.optimizer.init_args.lr": 1e-4,
        "model.init_args.scheduler.init_args.step_size": 400,
        "model.init_args.lw_saliency": 1.0,
        "model.init_args.max_ts": 150.0,
        "model.init_args.pp_clip_len": 2.0,
        "model.init_args.metric_clip_len": 2.0,
        "data.init_args.clip_len": 2.0,
        "data.init_args.max_v_l": 75,
        "data.init_args.val_file": "highlight_val_release.jsonl",
        "data.init_args.window_clips_from": "clip_len",
        "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/MR-full-mAP",
    },
    "charades_sta": {
        "model.init_args.optimizer.init_args.lr": 2e-4,
        "model.init_args.scheduler.init_args.step_size": 400,
        "model.init_args.lw_saliency": 4.0,
        "model.init_args.max_ts": 150.0,
        "model.init_args.pp_clip_len": 1.0,
        "data.init_args.clip_len": 1.0,
        "data.init_args.max_v_l": -1,
        "data.init_args.val_file": "charades_sta_test_tvr_format.jsonl",
        "data.init_args.window_clips_from": "duration",
        "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/R1@0.5+R1@0.7",
    },
    "tacos": {
        "model.init_args.optimizer.init_args.lr": 2e-4,
        "model.init_args.scheduler.init_args.step_size": 200,
        "model.init_args.lw_saliency": 4.0,
        "model.init_args.max_ts": None,
        "model.init_args.pp_clip_len": 2.0,
        "data.init_args.clip_len": 2.0,
        "data.init_args.max_v_l": -1,
        "data.init_args.val_file": "test.jsonl",
        "data.init_args.window_clips_from": "duration",
        "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/R1@0.5+R1@0.7",
    },
}
