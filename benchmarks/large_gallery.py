"""A million-item gallery through ``RetrievalMetric``, the code path of ``leccr test``, against the bare GEMM.

10,000 queries (one positive each, on distinct items spread over the gallery) against 1,000,000 unit-norm gallery
embeddings (d = 512, perf_anchors "Data" noise) are given to a ``RetrievalMetric`` in update batches of
``--update-batch`` rows, as an evaluation loop would, then ``compute()`` returns the full report (both directions,
mAP). Timed against the floor: the same products in the same pieces (``AUTO_CHUNK_ROWS`` queries x
``PIECE_ELEMENTS`` scores) into one reused buffer, with no counting, in both orientations (the faster of the two in
each repetition, as ``eval_speed.py``; ``DotScorer`` computes the item-major one on the CPU). Also printed: the peak
memory of ``compute()`` above the level after the updates, i.e. above the embeddings held by the metric (goal 1 GiB).
The update batches are fresh tensors like a model's outputs; with the default 100,000-row batches glibc returns
each one to the system as ``compute()`` compacts them (much smaller batches stay in the heap and show up here).

Then the approximate faiss indexes of ``leccr index`` (``tools.index.build_index``: ``IVF<nlist>,Flat`` trained on
``--ivf-train`` rows, and ``HNSW<m>``) are built over a gallery of the same size and width and report their build
time, their query throughput against the exact ``IndexFlatIP`` search on the same threads, recall@10 against that
exact search ("k-recall@k", on ``--recall-queries`` queries) and how often the true item is in the top 10, exact and
approximate. That gallery is clustered (``--clusters`` centres, items at cosine ~0.3 to theirs, queries a small
perturbation of their item), as learned embeddings are: on the isotropic gallery above every neighbour but the true
one is noise and no index can recall it. ``--faiss`` (default ``ivf hnsw``) chooses the kinds; ``--faiss`` alone skips
this part.

    python benchmarks/large_gallery.py                                   # 10,000 x 1,000,000 x 512
    python benchmarks/large_gallery.py --queries 2000 --gallery 100000   # a quick run
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from _common import PeakMemory, add_device_options, alternate, goal_line, paired_ratio, peak_tflops, rate, setup_device

from leccr_lightning.metrics import RetrievalMetric
from leccr_lightning.metrics.ranking import AUTO_CHUNK_ROWS, PIECE_ELEMENTS
from leccr_lightning.tools.index import build_index, recall_against_exact

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
    parser.add_argument("--faiss", nargs="*", default=["ivf", "hnsw"], choices=["ivf", "hnsw"])
    parser.add_argument("--nprobe", type=int, default=16, help="IVF lists searched per query")
    parser.add_argument("--ivf-train", type=int, default=200_000, help="gallery rows the IVF quantizer trains on")
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--ef-search", type=int, default=128)
    parser.add_argument("--recall-queries", type=int, default=1000, help="queries of the recall@10 check")
    parser.add_argument("--clusters", type=int, default=None, help="centres of the faiss gallery (gallery / 1000)")
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


def bare_pieces(queries: torch.Tensor, gallery: torch.Tensor, item_major: bool) -> None:
    """The evaluation's products without counting: AUTO_CHUNK_ROWS-query chunks x PIECE_ELEMENTS tiles into one
    buffer, as ``chunk @ tile.T`` or (``item_major``) ``tile @ chunk.T``."""
    rows = min(AUTO_CHUNK_ROWS, queries.shape[0])
    width = max(1, PIECE_ELEMENTS // rows)
    buffer = torch.empty(rows * width, device=queries.device)
    for r0 in range(0, queries.shape[0], rows):
        chunk = queries[r0 : r0 + rows]
        for c0 in range(0, gallery.shape[0], width):
            tile = gallery[c0 : c0 + width]
            if item_major:
                torch.matmul(tile, chunk.T, out=buffer[: tile.shape[0] * chunk.shape[0]].view(tile.shape[0], -1))
            else:
                torch.matmul(chunk, tile.T, out=buffer[: chunk.shape[0] * tile.shape[0]].view(chunk.shape[0], -1))


def clustered_gallery(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit-norm gallery [N, D] around ``--clusters`` random centres (item = centre + noise of the same norm x 3),
    one query per sampled item (item + noise of norm 0.5, normalised) and the items the queries belong to."""
    rng = np.random.default_rng(args.seed)
    clusters = args.clusters or max(1, args.gallery // 1000)
    centres = rng.standard_normal((clusters, args.dim), dtype=np.float32)
    gallery = np.empty((args.gallery, args.dim), dtype=np.float32)
    for start in range(0, args.gallery, args.update_batch):
        stop = min(start + args.update_batch, args.gallery)
        rows = centres[rng.integers(0, clusters, stop - start)]
        rows += 3.0 * rng.standard_normal(rows.shape, dtype=np.float32)
        gallery[start:stop] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    targets = rng.choice(args.gallery, args.queries, replace=False)
    queries = gallery[targets] + 0.5 / args.dim**0.5 * rng.standard_normal((args.queries, args.dim), dtype=np.float32)
    return gallery, queries / np.linalg.norm(queries, axis=1, keepdims=True), targets


def in_top_10(found: np.ndarray, targets: np.ndarray) -> float:
    """Percentage of queries whose own item is among their 10 results."""
    return float((found == targets[:, None]).any(axis=1).mean()) * 100


def faiss_section(args: argparse.Namespace) -> None:
    """Build each approximate index over a clustered gallery and print build time, throughput against the exact
    search, recall@10 against it and the rate of the true item in the top 10."""
    import faiss

    gallery, queries, targets = clustered_gallery(args)
    check = queries[: args.recall_queries]
    flat, _, _ = build_index(gallery)
    start = time.perf_counter()
    exact = flat.search(check, 10)[1]
    exact_qps = len(check) / (time.perf_counter() - start)
    print(
        f"faiss on {faiss.omp_get_max_threads()} threads, clustered gallery of {args.gallery} x {args.dim}: exact "
        f"IndexFlatIP {exact_qps:.0f} queries/s, true item in top 10 {in_top_10(exact, targets[: len(check)]):.2f}%"
    )
    del flat
    for kind in args.faiss:
        start = time.perf_counter()
        index, description, parameters = build_index(
            gallery,
            kind,
            nprobe=args.nprobe,
            hnsw_m=args.hnsw_m,
            ef_search=args.ef_search,
            seed=args.seed,
            train_size=args.ivf_train,
        )
        built = time.perf_counter() - start
        start = time.perf_counter()
        found = index.search(queries, 10)[1]
        qps = len(queries) / (time.perf_counter() - start)
        recall = recall_against_exact(index, gallery, check, 10)
        print(
            f"  {description} {parameters}: built in {built:.0f} s | {qps:.0f} queries/s "
            f"({qps / exact_qps:.1f}x the exact search) | recall@10 vs exact {recall:.3f} | true item in top 10 "
            f"{in_top_10(found, targets):.2f}%"
        )
        del index


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
    calls = {
        "compute": metric.compute,
        "chunk @ tile.T": lambda: bare_pieces(queries, gallery, item_major=False),
        "tile @ chunk.T": lambda: bare_pieces(queries, gallery, item_major=True),
    }
    times = alternate(calls, args.repeats, device, warm_up=False)  # the measured first compute was the warm-up
    floor = [min(a, b) for a, b in zip(times["chunk @ tile.T"], times["tile @ chunk.T"], strict=True)]
    flops = 2.0 * args.queries * args.gallery * args.dim
    median = {key: statistics.median(value) for key, value in times.items()}
    print(
        f"RetrievalMetric.compute {median['compute']:.2f} s | bare GEMM pieces: chunk @ tile.T "
        f"{median['chunk @ tile.T']:.2f} s, tile @ chunk.T {median['tile @ chunk.T']:.2f} s, "
        f"{rate(flops, statistics.median(floor), peak_tflops(device, args.peak_tflops))} | first compute: "
        f"{memory.describe()}"
    )
    print(
        "  " + goal_line("compute / bare GEMM floor (paired median)", paired_ratio(times["compute"], floor), RATIO_GOAL)
    )
    peak = max(memory.rss_above, memory.cuda_above) / 2**30
    print("  " + goal_line("peak memory above the embeddings", peak, MEMORY_GOAL_GIB, " GiB"))
    print(
        f"  t2v R@1 {report['t2v_r1']:.2f} R@10 {report['t2v_r10']:.2f} medr {report['t2v_medr']} | "
        f"v2t R@1 {report['v2t_r1']:.2f} mAP {report['v2t_map']:.2f}"
    )
    if args.faiss:
        del metric, queries, gallery
        faiss_section(args)


if __name__ == "__main__":
    main()
