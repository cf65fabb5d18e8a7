"""QD-DETR: the released QVHighlights recipe (Moment-DETR's optimisation and protocol with QD-DETR's model), and
the DETR family's Charades-STA / TACoS recipes (CG-DETR's scripts); spec grounding_methods §2.4."""

from tests.cli.recipe_cards import moment_detr

METHOD = "qd_detr"
SOURCES = (
    "wjun0830/QD-DETR:qd_detr/config.py:38-149 (the Moment-DETR defaults: seed 2018, lr 1e-4, lr_drop 400, wd 1e-4, "
    "200 epochs, batch 32, grad_clip 0.1, sizes, loss weights, matching costs)",
    "wjun0830/QD-DETR:qd_detr/inference.py:196, 317-319 (float16 saliency; AdamW over every parameter, StepLR)",
    "wjun0830/QD-DETR:qd_detr/transformer.py:766-777 (PReLU), model.py:313 (rank-contrastive tau 0.5)",
    "wjun0830/QD-DETR:qd_detr/train.py:145-172 (validation every 5 epochs, best MR-full-mAP)",
    *moment_detr.SOURCES[5:],
)

COMMON = {
    **moment_detr.COMMON,
    "model.class_path": "leccr_lightning.methods.grounding.qd_detr.QDDETR",
    "model.init_args.t2v_layers": 2,
    "model.init_args.activation": "prelu",
    "model.init_args.rank_tau": 0.5,
}
RECIPES = moment_detr.RECIPES
