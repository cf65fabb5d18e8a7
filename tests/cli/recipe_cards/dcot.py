"""DCOT recipe card ([recon]: no public code, ccr_methods §5.2): the NRCCR-like recipe of the baseline card with the
confidence-weighted triplet as our reading of the paper."""

from tests.cli.recipe_cards.baseline import DATASET_DELTAS, NRCCR_LIKE
from tests.cli.recipe_cards.baseline import SOURCES as NRCCR_LIKE_SOURCES

METHOD = "dcot"
SOURCES = (
    *NRCCR_LIKE_SOURCES,
    "[recon] ccr_methods §5.2: Sinkhorn plan of lambda C^L + (1 - lambda) C^M, eps 0.05, w_i = B P*_ii weighting the "
    "(t, v) VSE++ triplet (margin 0.2), lambda from 1.0 to 0.5 over training, confidences 1 during the first 10 %",
)
COMMON = {
    **NRCCR_LIKE,
    "model.class_path": "leccr_lightning.methods.dcot.DCOT",
    "model.init_args.target_weight": 1.0,
    "model.init_args.objective.class_path": "leccr_lightning.methods.objectives.DCOTObjective",
    "model.init_args.objective.init_args.base": "triplet",
    "model.init_args.objective.init_args.margin": 0.2,
    "model.init_args.objective.init_args.epsilon": 0.05,
    "model.init_args.objective.init_args.curriculum_mode": "progress",
    "model.init_args.objective.init_args.curriculum_start": 1.0,
    "model.init_args.objective.init_args.curriculum_end": 0.5,
    "model.init_args.objective.init_args.warmup": 0.1,
}
RECIPES = DATASET_DELTAS
