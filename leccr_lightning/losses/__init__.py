"""Pure loss functions over score matrices or embeddings (no modules, no hidden state)."""

from leccr_lightning.losses.curriculum import CurriculumSchedule
from leccr_lightning.losses.distillation import (
    feature_distillation,
    kl_to_soft_target,
    minmax_normalize,
    mix_targets,
    slot_diversity,
    soft_target_distillation,
)
from leccr_lightning.losses.pairwise import (
    bidirectional,
    hinge_triplet,
    info_nce,
    positive_mask_from_ids,
    soft_positive_targets,
    symmetric_info_nce,
    unified_pair_loss,
)
from leccr_lightning.losses.ranking import kendall_rank_loss, smooth_ndcg_loss, smooth_ranks
from leccr_lightning.losses.transport import (
    batched_sinkhorn_plan,
    cosine_cost,
    plan_confidences,
    sinkhorn_plan,
    token_ot_distance,
)

__all__ = [
    "CurriculumSchedule",
    "batched_sinkhorn_plan",
    "bidirectional",
    "cosine_cost",
    "feature_distillation",
    "hinge_triplet",
    "info_nce",
    "kendall_rank_loss",
    "kl_to_soft_target",
    "minmax_normalize",
    "mix_targets",
    "plan_confidences",
    "positive_mask_from_ids",
    "sinkhorn_plan",
    "slot_diversity",
    "smooth_ndcg_loss",
    "smooth_ranks",
    "soft_positive_targets",
    "soft_target_distillation",
    "symmetric_info_nce",
    "token_ot_distance",
    "unified_pair_loss",
]
