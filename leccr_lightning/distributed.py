"""Cross-rank gathering for contrastive losses and evaluation (identity when not distributed).

``all_gather_with_grad`` uses torch's functional ``all_gather_single_autograd`` (no deprecation warning in
torch 2.14.1, ecosystem P7); its backward reduce-scatters (sums) the gradient of the gathered tensor, so a
loss over gathered embeddings, after DDP averages the ranks' gradients, has the single-process full-batch
gradient (ecosystem B3). Without gradients through the gather a local loss trains silently wrong (P6).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor
from torch.distributed import _functional_collectives as funcol
from torchmetrics.utilities.distributed import gather_all_tensors


def is_distributed() -> bool:
    """True when a process group is initialised with more than one rank."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_gather_with_grad(x: Tensor) -> Tensor:
    """Concatenation over ranks along dim 0 [W*B, ...]; the gradient flows back to each rank's own slice.

    Every rank must pass a tensor of the same shape (pad uneven batches first).
    """
    if not is_distributed():
        return x
    return funcol.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)


def local_positive_offset(local_batch_size: int) -> int:
    """rank * local_batch_size: column of this rank's first item in a gathered [W*B] key set.

    For the local-loss form (rank r scores its B queries against all W*B keys), the positive of local
    query i is column i + offset (or use ``positive_mask_from_ids(local_ids, gathered_ids)``).
    """
    if not is_distributed():
        return 0
    return dist.get_rank() * local_batch_size


def gather_uneven(x: Tensor) -> Tensor:
    """Concatenation over ranks along dim 0 of tensors whose first dims differ (rank order), no gradient."""
    if not is_distributed():
        return x
    with torch.no_grad():
        return torch.cat(gather_all_tensors(x.detach().contiguous()), dim=0)
