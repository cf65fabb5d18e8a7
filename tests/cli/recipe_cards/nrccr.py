"""NRCCR recipe card: LiJiaBei-7/nrccr's do_all_*.sh, train_base.py and trainer_*.py, per dataset."""

METHOD = "nrccr"
SOURCES = (
    "LiJiaBei-7/nrccr:do_all_multi30k.sh:4-36 (task 1 and 2), do_all_mscoco.sh:4-34, do_all_vatex.sh:4-26, "
    "do_all_msrvttcn.sh:4-25: lr 1e-4, text/video hidden 768/1024, 8 heads, frozen with layer_list 3-11 (images) "
    "or 5-11 (videos), tri_alpha 0.6, dtl_beta 0.4, l1_gama 0.1, back_w 0.5, scale 0.001, glr 1e-3, disc_type "
    "not-so-weak (strong for VATEX), img_encoder clip, batch_size 128",
    "LiJiaBei-7/nrccr:train_base.py:30-56: dropout 0.2, 0-1536 mappings, margin 0.2, Adam, lr_decay_rate 0.99, "
    "grad_clip 2, num_epochs 50, batch_size 128",
    "LiJiaBei-7/nrccr:trainer_img.py:157-208 (= trainer_vid.py:147-197): x0.99 per epoch, x0.5 on a plateau at most "
    "every 3 epochs, early stop after more than 10 epochs without improvement, best checkpoint on validation",
    "LiJiaBei-7/nrccr:validate.py:59-86: validation score = t2v R1+R5+R10 of 0.2 norm(S(xx2en)) + 0.8 norm(S(xx)); "
    "tester_img.py:117: w = 0.5 at test (tester_vid.py:110 prints w in 1.0/0.8/0.5/0.2/0.0; we keep 0.5)",
    "LiJiaBei-7/nrccr:util/tag_data_provider_vid.py:14-49, 266-276, 355-360: cleaned English source and xx2enc "
    "queries, raw target and back-translation, BertTokenizer(do_lower_case=True) on bert-base-multilingual-cased; "
    "tag_data_provider_img.py:35, 300-308, 394: the image provider keeps the xx2enc queries raw (nrccr_image)",
)
IMAGE_LAYERS = [3, 4, 5, 6, 7, 8, 9, 10, 11]
VIDEO_LAYERS = [5, 6, 7, 8, 9, 10, 11]
COMMON = {
    "model.class_path": "leccr_lightning.methods.nrccr.NRCCR",
    "model.init_args.optimizer.class_path": "torch.optim.Adam",
    "model.init_args.optimizer.init_args.lr": 1e-4,
    "model.init_args.scheduler": None,
    "model.init_args.gradient_clip_norm": 2.0,
    "data.init_args.batch_size": 128,
    "trainer.max_epochs": 50,
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.monitor": "val/t2v_sumr",
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.decay": 0.99,
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.halve_factor": 0.5,
    "trainer.callbacks.DecayAndHalveOnPlateau.init_args.halve_every": 3,
    "trainer.callbacks.EarlyStopping.init_args.monitor": "val/t2v_sumr",
    "trainer.callbacks.EarlyStopping.init_args.patience": 11,
    "trainer.callbacks.ModelCheckpoint.init_args.monitor": "val/t2v_sumr",
    "trainer.callbacks.ModelCheckpoint.init_args.mode": "max",
    "model.init_args.target_weight": 0.6,
    "model.init_args.sim_weight": 0.4,
    "model.init_args.feat_weight": 0.1,
    "model.init_args.back_weight": 0.5,
    "model.init_args.adv_scale": 0.001,
    "model.init_args.sim_temperature": 0.07,
    "model.init_args.feat_beta": 4.0,
    "model.init_args.disc_lr": 0.001,
    "model.init_args.attention_heads": 8,
    "model.init_args.attention_qk_dim": 512,
    "model.init_args.embed_dim": 1536,
    "model.init_args.dropout": 0.2,
    "model.init_args.visual_hidden": 1024,
    "model.init_args.objective": None,
    "model.init_args.translate_weight_val": 0.2,
    "model.init_args.translate_weight_test": 0.5,
    "model.init_args.unmasked_mean": True,
    "model.init_args.mask_same_item": False,
    "data.init_args.roles": ["source", "target", "back"],
    "data.init_args.query_roles": ["query", "translated"],
    "data.init_args.tokenizer_lowercase": True,
    "data.init_args.max_length": 250,
}
IMAGE = {
    "data.init_args.normalization": "nrccr_image",
    "model.init_args.trainable_layers": IMAGE_LAYERS,
    "model.init_args.visual_encoder": "linear",
    "model.init_args.discriminator": "not-so-weak",
}
RECIPES = {
    **{
        name: IMAGE
        for name in (
            "multi30k_de",
            "multi30k_fr",
            "multi30k_cs",
            "multi30k_task1_de",
            "multi30k_task1_fr",
            "multi30k_task1_cs",
            "mscoco_ja",
            "mscoco_zh",
        )
    },
    "msrvtt10kcn_zh": {
        "model.init_args.trainable_layers": VIDEO_LAYERS,
        "model.init_args.visual_encoder": "frame_attention",
        "model.init_args.visual_heads": 8,
        "model.init_args.discriminator": "not-so-weak",
        "data.init_args.normalization": "nrccr",
    },
    "vatex_zh": {
        "model.init_args.trainable_layers": VIDEO_LAYERS,
        "model.init_args.visual_encoder": "frame_attention",
        "model.init_args.visual_heads": 8,
        "model.init_args.discriminator": "strong",
        "data.init_args.normalization": "nrccr",
    },
}
