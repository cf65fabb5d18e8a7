"""Evaluation speed vs the bare GEMM floor, measured in the same process (perf_anchors.md).

Synthetic unit-norm embeddings as in perf_anchors "Data": gallery g_j ~ N(0, I), caption i belongs to
item j = i // n_cap and is normalize(g_j + noise_scale * N(0, I/d)). For every shape the script alternates
A = ``retrieval_report_from_embeddings`` (both directions, mAP included, chunk_size=None) and
B = the bare fp32 ``q @ g.T``, and prints the medians, their ratio (goal <= 1.5) and t2v R@1.

    python benchmarks/eval_speed.py --shapes coco5k,vatex --dim 1024 --repeats 3 --threads 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

SHAPES = {
    "1kx1k": (1_000, 1),
    "coco1k": (1_000, 5),
    "vatex": (1_500, 10),
    "coco5k": (5_000, 5),
}
"""name -> (gallery items, captions per item)."""
RATIO_GOAL = 1.5


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="coco5k,vatex", help=f"comma-separated, from {sorted(SHAPES)}")
    parser.add_argument("--dim", type=int, default=1024, help="embedding dimension d")
    parser.add_argument("--repeats", type=int, default=3, help="timed A/B pairs per shape (median reported)")
    parser.add_argument("--threads", type=int, default=2, help="torch/OpenMP threads")
    parser.add_argument("--noise-scale", type=float, default=11.0, help="caption noise scale (perf_anchors: 11)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    unknown = [name for name in args.shapes.split(",") if name not in SHAPES]
    if unknown:
        parser.error(f"unknown shapes {unknown}; choose from {sorted(SHAPES)}")
    return args


def make_embeddings(num_gallery: int, captions_per_item: int, dim: int, noise_scale: float, seed: int):
    """(queries [G*n_cap, d], gallery [G, d], query_to_gallery [G*n_cap]) as in perf_anchors "Data"."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    gallery = torch.nn.functional.normalize(torch.randn(num_gallery, dim, generator=generator), dim=1)
    query_to_gallery = torch.arange(num_gallery * captions_per_item) // captions_per_item
    noise = torch.randn(query_to_gallery.numel(), dim, generator=generator) * (noise_scale / dim**0.5)
    queries = torch.nn.functional.normalize(gallery[query_to_gallery] + noise, dim=1)
    return queries, gallery, query_to_gallery


def main() -> None:
    """Time A (full evaluation) against B (bare GEMM) per shape and print the figures."""
    args = parse_args()
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    import torch

    from leccr_lightning.metrics import retrieval_report_from_embeddings

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, d = {args.dim}, repeats {args.repeats}")
    for name in args.shapes.split(","):
        num_gallery, captions_per_item = SHAPES[name]
        queries, gallery, query_to_gallery = make_embeddings(
            num_gallery, captions_per_item, args.dim, args.noise_scale, args.seed
        )

        def evaluate(queries=queries, gallery=gallery, query_to_gallery=query_to_gallery):
            return retrieval_report_from_embeddings(queries, gallery, query_to_gallery)

        def matmul(queries=queries, gallery=gallery):
            return queries @ gallery.T

        report = evaluate()
        matmul()
        eval_times, matmul_times = [], []
        for _ in range(args.repeats):
            for fn, times in ((evaluate, eval_times), (matmul, matmul_times)):
                start = time.perf_counter()
                fn()
                times.append(time.perf_counter() - start)
        eval_s, matmul_s = statistics.median(eval_times), statistics.median(matmul_times)
        ratios = [a / b for a, b in zip(eval_times, matmul_times, strict=True)]
        print(
            f"{name:>7}: {queries.shape[0]} queries x {num_gallery} gallery | eval {eval_s:.3f} s | "
            f"matmul {matmul_s:.3f} s | ratio {eval_s / matmul_s:.2f} (paired median "
            f"{statistics.median(ratios):.2f}, goal <= {RATIO_GOAL}) | t2v R@1 {report['t2v_r1']:.2f} "
            f"medr {report['t2v_medr']} | v2t R@1 {report['v2t_r1']:.2f} | mAP {report['t2v_map']:.2f}/"
            f"{report['v2t_map']:.2f}"
        )


if __name__ == "__main__":
    main()
