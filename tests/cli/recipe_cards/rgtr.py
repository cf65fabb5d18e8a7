"""RGTR (no official code, TensorsSun/RGTR holds a README only): QD-DETR's recipes with the [recon] defaults of the
anchor pairs and the IoU head (spec grounding_methods §3)."""

from tests.cli.recipe_cards import qd_detr

METHOD = "rgtr"
SOURCES = (
    "arXiv 2406.00143 (AAAI 2025) abstract: anchor pairs initialised by clustering the GT spans, IoU-aware scoring",
    "the QD-DETR recipes it is built on: " + "; ".join(qd_detr.SOURCES[:4]),
    *qd_detr.SOURCES[4:],
)

COMMON = {
    **qd_detr.COMMON,
    "model.class_path": "leccr_lightning.methods.grounding.rgtr.RGTR",
    "model.init_args.anchor_init": "kmeans",
    "model.init_args.anchors_file": None,
    "model.init_args.static_anchor_mode": "pos_embed",
    "model.init_args.dynamic_refine": True,
    "model.init_args.iou_loss_coef": 2.0,
    "model.init_args.score_mode": "product",
    "model.init_args.region_cost": 0.0,
}
RECIPES = qd_detr.RECIPES
