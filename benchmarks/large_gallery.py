"""A million-item gallery through ``RetrievalMetric``, the code path of ``leccr test``, against the bare GEMM.

10,000 queries (one positive each, on distinct items spread over the gallery) against 1,000,000 unit-norm gallery
embeddings (d = 512, perf_anchors "Data" noise) are given to a ``RetrievalMetric`` in update batches of
``--update-batch`` rows, as an evaluation loop would, then ``compute()`` returns the full report (both directions,
mAP). Timed against the floor: the same products in the same pieces (``AUTO_CHUNK_ROWS`` queries x
``PIECE_ELEMENTS`` scores) into one reused buffer, with no counting. Also printed: the peak memory of
``compute()`` above the level after the updates, i.e. above the embeddings held by the metric (goal 1 GiB).
The update batches are fresh tensors like a model's outputs; with the default 100,000-row batches glibc returns
each one to the system as ``compute()`` compacts them (much smaller batches stay in the heap and show up here).

    python benchmarks/large_gallery.py                                   # 10,000 x 1,000,000 x 512 (3 x ~40 s)
    python benchmarks/large_gallery.py --queries 2000 --gallery 100000   # a quick run
"""

from __future__ import annotations

import argparse
import statistics

import torch
from _common import PeakMemory, add_device_options, alternate, goal_line, paired_ratio, peak_tflops, rate, setup_device

from leccr_lightning.metrics import RetrievalMetric
from leccr_lightning.metrics.ranking import AUTO_CHUNK_ROWS, PIECE_ELEMENTS

RATIO_GOAL = 1.3
MEMORY_GOAL_GIB = 1.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=int, default=10_000)
    parser.add_argument("--gallery", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--update-batch", type=int, default=100_000, help="rows per RetrievalMetric.update call")
    parser.add_argument("--repeats", type=int, default=1, help="timed repetitions (medians reported)")
    parser.add_argument("--noise-scale", type=float, default=11.0)
    parser.add_argument("--seed", type=int, default=0)
    add_device_options(parser)
    args = parser.parse_args()
    if args.queries > args.gallery:
        parser.error("--queries must not exceed --gallery (one distinct positive item per query)")
    return args


def fill_metric(args: argparse.Namespace, device: torch.device) -> tuple[RetrievalMetric, torch.Tensor, torch.Tensor]:
    """A metric holding the gallery (batch by batch, each a fresh tensor) and the queries; returns it with the
    queries and a gallery view for the floor (the metric's own compacted state)."""
    generator = torch.Generator(device=device).manual_seed(args.seed)
    stride = args.gallery // args.queries
    targets = torch.arange(args.queries, device=device) * stride
    metric = RetrievalMetric(compute_with_cache=False).to(device)
    queries = torch.empty(args.queries, args.dim, device=device)
    for start in range(0, args.gallery, args.update_batch):
        stop = min(start + args.update_batch, args.gallery)
        batch = torch.nn.functional.normalize(torch.randn(stop - start, args.dim, generator=generator, device=device))
        metric.update("gallery", torch.arange(start, stop, device=device), batch)
        here = ((targets >= start) & (targets < stop)).nonzero().squeeze(1)
        noise = torch.randn(here.numel(), args.dim, generator=generator, device=device) * (
            args.noise_scale / args.dim**0.5
        )
        queries[here] = torch.nn.functional.normalize(batch[targets[here] - start] + noise)
        del batch
    for start in range(0, args.queries, args.update_batch):
        rows = torch.arange(start, min(start + args.update_batch, args.queries), device=device)
        metric.update("query", rows, queries[rows], targets[rows])
    return metric, queries, targets


def bare_pieces(queries: torch.Tensor, gallery: torch.Tensor) -> None:
    """The evaluation's products without counting: AUTO_CHUNK_ROWS-query chunks x PIECE_ELEMENTS tiles, one buffer."""
    rows = min(AUTO_CHUNK_ROWS, queries.shape[0])
    width = max(1, PIECE_ELEMENTS // rows)
    buffer = torch.empty(rows, width, device=queries.device)
    for r0 in range(0, queries.shape[0], rows):
        chunk = queries[r0 : r0 + rows]
        for c0 in range(0, gallery.shape[0], width):
            tile = gallery[c0 : c0 + width]
            torch.matmul(chunk, tile.T, out=buffer[: chunk.shape[0], : tile.shape[0]])


def main() -> None:
    args = parse_args()
    device = setup_device(args)
    metric, queries, _ = fill_metric(args, device)
    print(
        f"{args.queries} queries x {args.gallery} gallery items, d = {args.dim}, update batches of "
        f"{args.update_batch} rows; the embeddings held by the metric: "
        f"{(args.queries + args.gallery) * args.dim * 4 / 2**30:.2f} GiB"
    )
    with PeakMemory(device) as memory:
        report = metric.compute()
    gallery = metric.gallery_view_gallery[0]
    calls = {"compute": metric.compute, "bare": lambda: bare_pieces(queries, gallery)}
    times = alternate(calls, args.repeats, device, warm_up=False)  # the measured first compute was the warm-up
    flops = 2.0 * args.queries * args.gallery * args.dim
    compute_s, bare_s = statistics.median(times["compute"]), statistics.median(times["bare"])
    print(
        f"RetrievalMetric.compute {compute_s:.2f} s | bare GEMM pieces {bare_s:.2f} s, "
        f"{rate(flops, bare_s, peak_tflops(device, args.peak_tflops))} | first compute: {memory.describe()}"
    )
    print(
        "  "
        + goal_line("compute / bare GEMM (paired median)", paired_ratio(times["compute"], times["bare"]), RATIO_GOAL)
    )
    peak = max(memory.rss_above, memory.cuda_above) / 2**30
    print("  " + goal_line("peak memory above the embeddings", peak, MEMORY_GOAL_GIB, " GiB"))
    print(
        f"  t2v R@1 {report['t2v_r1']:.2f} R@10 {report['t2v_r10']:.2f} medr {report['t2v_medr']} | "
        f"v2t R@1 {report['v2t_r1']:.2f} mAP {report['v2t_map']:.2f}"
    )


if __name__ == "__main__":
    main()
