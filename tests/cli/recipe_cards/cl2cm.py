"""CL2CM recipe card ([recon]: no public code, ccr_methods §4.2): the NRCCR-like recipe of the baseline card plus the
CL2CM terms as our reading of the paper."""

from tests.cli.recipe_cards.baseline import DATASET_DELTAS, NRCCR_LIKE
from tests.cli.recipe_cards.baseline import SOURCES as NRCCR_LIKE_SOURCES

METHOD = "cl2cm"
SOURCES = (
    *NRCCR_LIKE_SOURCES,
    "[recon] ccr_methods §4.2: L = L_cm(s, v) + L_cm(t, v) + L_sent + L_word + L_kd, all weights 1, InfoNCE 0.07, "
    "relational KD temperatures 0.07 / 0.07, word-level Sinkhorn eps 0.05, 100 iterations",
)
COMMON = {
    **NRCCR_LIKE,
    "model.class_path": "leccr_lightning.methods.cl2cm.CL2CM",
    "model.init_args.objective": None,
    "model.init_args.lingual_objective": None,
    "model.init_args.target_weight": 1.0,
    "model.init_args.sent_weight": 1.0,
    "model.init_args.word_weight": 1.0,
    "model.init_args.kd_weight": 1.0,
    "model.init_args.kd_student_temperature": 0.07,
    "model.init_args.kd_teacher_temperature": 0.07,
    "model.init_args.ot_epsilon": 0.05,
    "model.init_args.ot_max_iter": 100,
}
RECIPES = DATASET_DELTAS
