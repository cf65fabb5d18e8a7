"""CDNet (no public code): QD-DETR's recipes with the [recon] defaults of QSD and CDD (spec grounding_methods §4)."""

from tests.cli.recipe_cards import qd_detr

METHOD = "cdnet"
SOURCES = (
    "arXiv 2408.07600 abstract: QSD (global and fine-grained alignment, dual-level contrastive losses), CDD (offsets)",
    "the QD-DETR recipes it is built on: " + "; ".join(qd_detr.SOURCES[:4]),
    *qd_detr.SOURCES[4:],
)

COMMON = {
    **qd_detr.COMMON,
    "model.class_path": "leccr_lightning.methods.grounding.cdnet.CDNet",
    "model.init_args.fine_pooling": "max",
    "model.init_args.num_offsets": 4,
    "model.init_args.max_offset": 4.0,
    "model.init_args.qsd_temperature": 0.07,
    "model.init_args.lw_qsd_global": 1.0,
    "model.init_args.lw_qsd_fine": 1.0,
    "model.init_args.lw_qsd_bce": 1.0,
}
RECIPES = qd_detr.RECIPES
