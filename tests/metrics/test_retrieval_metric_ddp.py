"""RetrievalMetric: drops DistributedSampler padding; 1 and 2 processes give identical numbers."""

from __future__ import annotations

import multiprocessing
import os
import queue
import socket

import pytest
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

from leccr_lightning.metrics import (
    DotScorer,
    FusedScorer,
    RetrievalMetric,
    retrieval_report_from_embeddings,
    retrieval_report_from_views,
)
from leccr_lightning.metrics.retrieval import _compacted, _unique_positions

NUM_QUERIES, NUM_GALLERY, DIM, WORLD_SIZE, BATCH = 23, 9, 6, 2, 4


def eval_split() -> dict[str, torch.Tensor]:
    """An odd-sized split: 23 queries (two views) over 9 gallery items, continuous random embeddings."""
    generator = torch.Generator().manual_seed(0)
    return {
        "target": torch.randn(NUM_QUERIES, DIM, generator=generator),
        "target2en": torch.randn(NUM_QUERIES, DIM, generator=generator),
        "gallery": torch.randn(NUM_GALLERY, DIM, generator=generator),
        "targets": torch.randint(0, NUM_GALLERY, (NUM_QUERIES,), generator=generator),
    }


def make_metrics() -> dict[str, RetrievalMetric]:
    """A plain dot-product metric and a two-view min-max fused one (NRCCR translate-test style)."""
    fused = FusedScorer([(DotScorer("target2en"), 0.5), (DotScorer("target"), 0.5)])
    return {"dot": RetrievalMetric(chunk_size=5), "fused": RetrievalMetric(scorer=fused)}


def shard(size: int, rank: int, world_size: int) -> list[int]:
    """The indices a shuffling DistributedSampler gives ``rank`` (padded by repeating indices)."""
    return list(DistributedSampler(range(size), num_replicas=world_size, rank=rank, shuffle=True, seed=3))


def feed(metrics: dict[str, RetrievalMetric], split: dict[str, torch.Tensor], rank: int, world_size: int) -> None:
    """Update the metrics batch by batch with this rank's padded shards of queries and gallery."""
    queries, items = shard(NUM_QUERIES, rank, world_size), shard(NUM_GALLERY, rank, world_size)
    for start in range(0, len(queries), BATCH):
        index = torch.tensor(queries[start : start + BATCH])
        metrics["dot"].update("query", index, split["target"][index], split["targets"][index])
        views = {"target": split["target"][index], "target2en": split["target2en"][index]}
        metrics["fused"].update("query", index, views, split["targets"][index])
    for start in range(0, len(items), BATCH):
        index = torch.tensor(items[start : start + BATCH])
        for metric in metrics.values():
            metric.update("gallery", index, split["gallery"][index])


def as_floats(metrics: dict[str, RetrievalMetric]) -> dict[str, dict[str, float]]:
    return {name: {key: float(value) for key, value in metric.compute().items()} for name, metric in metrics.items()}


def ddp_worker(rank: int, port: int, results: multiprocessing.Queue) -> None:
    """One gloo rank: update with its padded shard, compute, send python floats to the parent."""
    try:
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD_SIZE)
        metrics = make_metrics()
        feed(metrics, eval_split(), rank, WORLD_SIZE)
        results.put((rank, as_floats(metrics)))
        dist.destroy_process_group()
    except Exception as error:
        results.put((rank, f"{type(error).__name__}: {error}"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_padded_shards_on_one_process_equal_the_plain_report():
    split = eval_split()
    metrics = make_metrics()
    for rank in range(WORLD_SIZE):  # every shard, duplicates included, fed to one process
        feed(metrics, split, rank, WORLD_SIZE)
    reports = as_floats(metrics)
    expected = retrieval_report_from_embeddings(split["target"], split["gallery"], split["targets"], chunk_size=5)
    assert reports["dot"] == expected
    queries = {"target": split["target"], "target2en": split["target2en"]}
    fused = FusedScorer([(DotScorer("target2en"), 0.5), (DotScorer("target"), 0.5)])
    assert reports["fused"] == retrieval_report_from_views(
        queries, {"gallery": split["gallery"]}, split["targets"], fused
    )


@pytest.mark.ddp
def test_two_gloo_processes_equal_one_process():
    split = eval_split()
    single = make_metrics()
    feed(single, split, rank=0, world_size=1)
    expected = as_floats(single)

    context = multiprocessing.get_context("fork")
    results = context.Queue()
    port = free_port()
    workers = [context.Process(target=ddp_worker, args=(rank, port, results)) for rank in range(WORLD_SIZE)]
    for worker in workers:
        worker.start()
    try:
        received = dict(results.get(timeout=60) for _ in workers)
    except queue.Empty:
        pytest.fail("a DDP worker sent no result within 60 s")
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    for rank in range(WORLD_SIZE):
        assert received[rank] == expected, f"rank {rank}: {received[rank]}"


def test_plain_tensor_views_use_the_default_view_names():
    split = eval_split()
    metric = RetrievalMetric(query_view="text", gallery_view="video")
    metric.update("query", torch.arange(NUM_QUERIES), split["target"], split["targets"])
    metric.update("gallery", torch.arange(NUM_GALLERY), {"video": split["gallery"]})
    assert metric.compute() == retrieval_report_from_embeddings(split["target"], split["gallery"], split["targets"])


def test_missing_position_is_named():
    split = eval_split()
    metric = RetrievalMetric()
    keep = torch.tensor([index for index in range(NUM_QUERIES) if index != 7])
    metric.update("query", keep, split["target"][keep], split["targets"][keep])
    metric.update("gallery", torch.arange(NUM_GALLERY), split["gallery"])
    with pytest.raises(ValueError, match="query position 7 is missing"):
        metric.compute()


def test_update_errors():
    metric = RetrievalMetric()
    views = torch.randn(3, 2)
    with pytest.raises(ValueError, match="role must be"):
        metric.update("caption", torch.arange(3), views)
    with pytest.raises(ValueError, match="need integer targets"):
        metric.update("query", torch.arange(3), views)
    with pytest.raises(ValueError, match="take no targets"):
        metric.update("gallery", torch.arange(3), views, torch.arange(3))
    with pytest.raises(ValueError, match="2 rows for 3 positions"):
        metric.update("gallery", torch.arange(3), views[:2])
    metric.update("gallery", torch.arange(3), views)
    with pytest.raises(ValueError, match="differ from the first update"):
        metric.update("gallery", torch.arange(3, 6), {"other": views})
    with pytest.raises(ValueError, match="no query embeddings"):
        metric.compute()


def test_compute_compacts_the_states_without_moving_ordered_rows():
    split = eval_split()
    metric = RetrievalMetric()
    for start in range(0, NUM_QUERIES, BATCH):
        rows = torch.arange(start, min(start + BATCH, NUM_QUERIES))
        metric.update("query", rows, split["target"][rows], split["targets"][rows])
    metric.update("gallery", torch.arange(NUM_GALLERY), split["gallery"])
    first = metric.compute()
    assert len(metric.query_view_query) == 1 and torch.equal(metric.query_view_query[0], split["target"])
    assert metric.gallery_view_gallery[0].data_ptr() == split["gallery"].data_ptr(), "one ordered part: no copy"
    assert (
        metric.compute()
        == first
        == retrieval_report_from_embeddings(split["target"], split["gallery"], split["targets"])
    )
    assert _unique_positions(torch.arange(5), "query") is None
    assert _unique_positions(torch.tensor([2, 0, 1, 0]), "query").tolist() == [1, 2, 0]
    parts = [torch.ones(2, 3), torch.zeros(1, 3)]
    assert torch.equal(_compacted(parts), torch.tensor([[1.0] * 3, [1.0] * 3, [0.0] * 3])) and len(parts) == 1
