"""ViSERN recipe card: no public code; the paper's settings as recalled (itr_video_methods §2.2) [recall], on the
Dual Encoding template (VSRN's GCN, Dual Encoding's encoders and recipe)."""

METHOD = "visern"
SOURCES = [
    "Feng et al., IJCAI 2020 (arXiv 2006.08889) §3-4 [recall]",
    "KunpengLi1994/VSRN:GCN_lib/Rs_GCN.py (residual GCN, BN initialised to zero, 4 layers)",
]
COMMON = {
    "model.class_path": "leccr_lightning.methods.visern.ViSERN",
    "model.init_args.region_dim": 2048,
    "model.init_args.gcn_layers": 4,
    "model.init_args.normalizer": "random_walk",
    "model.init_args.embed_dim": 2048,
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.mining": "hardest",
    "model.init_args.optimizer.init_args.lr": 0.0001,
    "data.init_args.batch_size": 128,
    "data.init_args.extras.regions.class_path": "leccr_lightning.data.video.regions.RegionFeatures",
    "trainer.max_epochs": 50,
}
RECIPES = {
    "msrvtt10k": {"data.init_args.collection": "msrvtt10k"},
    "msvd": {"data.init_args.collection": "msvd"},
}
