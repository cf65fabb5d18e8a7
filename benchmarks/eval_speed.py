"""Evaluation speed against the bare fp32 GEMM floor, measured in the same process (perf_anchors.md).

Synthetic unit-norm embeddings as in perf_anchors "Data": gallery g_j ~ N(0, I), caption i belongs to item
j = i // n_cap and is normalize(g_j + noise_scale * N(0, I/d)). For every shape the script alternates
A = ``retrieval_report_from_embeddings`` (both directions, R@K, MedR/MeanR and mAP, default chunking) with the bare
products ``q @ g.T`` and ``g @ q.T``; the floor of each repetition is the faster of the two orientations. It prints
the paired median of A / floor with the goal, the GEMM's TFLOP/s, the evaluation's extra peak memory and its metrics.

    python benchmarks/eval_speed.py --shapes coco5k,vatex --dim 1024 --repeats 5 --device cpu --threads 2
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import (
    PeakMemory,
    add_device_options,
    alternate,
    goal_line,
    paired_ratio,
    peak_tflops,
    rate,
    setup_device,
)

from leccr_lightning.metrics import retrieval_report_from_embeddings

SHAPES = {
    "1kx1k": (1_000, 1, 1.15),
    "coco1k": (1_000, 5, 1.15),
    "vatex": (1_500, 10, 1.15),
    "coco5k": (5_000, 5, 1.05),
}
"""name -> (gallery items, captions per item, goal for evaluation / GEMM floor)."""


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="coco5k,vatex", help=f"comma-separated, from {sorted(SHAPES)}")
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimension d")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per shape (medians reported)")
    parser.add_argument("--noise-scale", type=float, default=11.0, help="caption noise scale (perf_anchors: 11)")
    parser.add_argument("--seed", type=int, default=0)
    add_device_options(parser)
    args = parser.parse_args()
    unknown = [name for name in args.shapes.split(",") if name not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    return args


def make_embeddings(
    num_gallery: int, captions_per_item: int, dim: int, noise_scale: float, seed: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(queries [G*n_cap, d], gallery [G, d], query_to_gallery [G*n_cap]) as in perf_anchors "Data"."""
    generator = torch.Generator().manual_seed(seed)
    gallery = torch.nn.functional.normalize(torch.randn(num_gallery, dim, generator=generator), dim=1)
    query_to_gallery = torch.arange(num_gallery * captions_per_item) // captions_per_item
    noise = torch.randn(query_to_gallery.numel(), dim, generator=generator) * (noise_scale / dim**0.5)
    queries = torch.nn.functional.normalize(gallery[query_to_gallery] + noise, dim=1)
    return queries.to(device), gallery.to(device), query_to_gallery.to(device)


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    peak = peak_tflops(device, args.peak_tflops)
    print(f"d = {args.dim}, {args.repeats} repetitions; floor = the faster of q @ g.T and g @ q.T in each repetition")
    for name in args.shapes.split(","):
        num_gallery, captions_per_item, goal = SHAPES[name]
        queries, gallery, query_to_gallery = make_embeddings(
            num_gallery, captions_per_item, args.dim, args.noise_scale, args.seed, device
        )
        with PeakMemory(device) as memory:
            report = retrieval_report_from_embeddings(queries, gallery, query_to_gallery)
        times = alternate(
            {
                "evaluation": lambda q=queries, g=gallery, t=query_to_gallery: retrieval_report_from_embeddings(
                    q, g, t
                ),
                "q @ g.T": lambda q=queries, g=gallery: q @ g.T,
                "g @ q.T": lambda q=queries, g=gallery: g @ q.T,
            },
            args.repeats,
            device,
        )
        floor = [min(a, b) for a, b in zip(times["q @ g.T"], times["g @ q.T"], strict=True)]
        flops = 2.0 * queries.shape[0] * num_gallery * args.dim
        median = {key: statistics.median(value) for key, value in times.items()}
        print(
            f"{name}: {queries.shape[0]} queries x {num_gallery} gallery | evaluation {median['evaluation']:.3f} s | "
            f"q @ g.T {median['q @ g.T']:.3f} s, g @ q.T {median['g @ q.T']:.3f} s | "
            f"GEMM {rate(flops, statistics.median(floor), peak)} | evaluation {memory.describe()}"
        )
        ratio = paired_ratio(times["evaluation"], floor)
        print("  " + goal_line(f"{name} evaluation / GEMM floor (paired median)", ratio, goal))
        print(
            f"  t2v R@1 {report['t2v_r1']:.2f} medr {report['t2v_medr']} mAP {report['t2v_map']:.4f} | "
            f"v2t R@1 {report['v2t_r1']:.2f} medr {report['v2t_medr']} mAP {report['v2t_map']:.4f}"
        )


if __name__ == "__main__":
    main()
