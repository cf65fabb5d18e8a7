"""Training losses of ``leccr_lightning.losses`` per step (forward + backward) against the bare similarity GEMM.

Leaves: two unit-norm embedding matrices [B, d] (perf_anchors "Losses": B = 128, d = 1024) with gradients; every
step computes S = q @ v.T, the loss on S and its backward. The floor is the same step with ``S.sum()`` as the loss
(the GEMM forward and its two backward products). Printed per loss: ms per step, the paired ratio to the floor, and
the achieved TFLOP/s of the step's matrix products as ``torch.utils.flop_counter.FlopCounterMode`` counts them
(elementwise work such as softmax, sigmoid ranks or Sinkhorn updates is not counted, so an elementwise-bound loss
shows a low rate) against the device's peak. There is no goal for these lines: they are reported.

    python benchmarks/loss_kernels.py --batch 128 --dim 1024 --threads 1
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from _common import add_device_options, alternate, paired_ratio, peak_tflops, rate, setup_device
from torch.utils.flop_counter import FlopCounterMode

from leccr_lightning.losses import (
    bidirectional,
    hinge_triplet,
    sinkhorn_plan,
    smooth_ndcg_loss,
    symmetric_info_nce,
)

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def losses(args: argparse.Namespace) -> dict[str, Loss]:
    """name -> loss of (scores [B, B], positive mask [B, B]) with the papers' defaults used in the configs."""
    return {
        "InfoNCE (symmetric, tau 0.07)": lambda s, p: symmetric_info_nce(s, p, 0.07),
        "hardest triplet (VSE++, margin 0.2, both ways)": lambda s, p: bidirectional(
            hinge_triplet, s, p, margin=0.2, mining="hardest"
        ),
        "S-NDCG (Listwise ITR, tau 0.01, B^3 ranks)": lambda s, p: smooth_ndcg_loss(s, p.to(s.dtype)),
        f"Sinkhorn (POT torch backend, log domain, eps 0.05, {args.sinkhorn_iterations} it.)": lambda s, p: (
            sinkhorn_plan(1.0 - s, 0.05, max_iter=args.sinkhorn_iterations, stop_threshold=0.0) * (1.0 - s)
        ).sum(),
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=31, help="timed steps per loss (medians reported)")
    parser.add_argument("--sinkhorn-iterations", type=int, default=100)
    add_device_options(parser)
    parser.set_defaults(threads=1)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    peak = peak_tflops(device, args.peak_tflops)
    generator = torch.Generator(device=device).manual_seed(0)
    leaves = [
        torch.nn.functional.normalize(
            torch.randn(args.batch, args.dim, generator=generator, device=device), dim=1
        ).requires_grad_()
        for _ in range(2)
    ]
    positives = torch.eye(args.batch, dtype=torch.bool, device=device)

    def step(loss: Loss) -> Callable[[], None]:
        def run() -> None:
            queries, items = leaves
            loss(queries @ items.T, positives).backward()
            queries.grad = items.grad = None

        return run

    floor = step(lambda s, p: s.sum())
    print(f"B = {args.batch}, d = {args.dim}, {args.repeats} steps each; floor = S.sum() forward + backward")
    for name, loss in {"similarity GEMM alone (floor)": lambda s, p: s.sum(), **losses(args)}.items():
        with FlopCounterMode(display=False) as counter:
            step(loss)()
        times = alternate({"loss": step(loss), "floor": floor}, args.repeats, device)
        seconds = statistics.median(times["loss"])
        print(
            f"{name}: {1e3 * seconds:.2f} ms/step, {paired_ratio(times['loss'], times['floor']):.2f}x the floor, "
            f"matmul {rate(counter.get_total_flops(), seconds, peak)}"
        )


if __name__ == "__main__":
    main()
