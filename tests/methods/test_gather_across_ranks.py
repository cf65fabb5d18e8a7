"""Cross-rank gather: a local InfoNCE over 2 gloo processes has the full-batch gradients (ecosystem B3)."""

from __future__ import annotations

import multiprocessing as mp
import queue
import socket
import traceback

import numpy as np
import pytest
import torch
import torch.distributed as dist

from leccr_lightning.distributed import (
    all_gather_with_grad,
    gather_uneven,
    is_distributed,
    local_positive_offset,
)
from leccr_lightning.losses.pairwise import info_nce, positive_mask_from_ids, symmetric_info_nce

WORLD = 2
LOCAL_BATCH = 4
# Visual ids with duplicates inside and across ranks (multi-positive labels).
IDS = torch.tensor([0, 1, 2, 0, 3, 2, 4, 5])


def _problem() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.nn.Linear, torch.Tensor]:
    """Whole-batch inputs, freshly seeded towers and a learnable log-temperature (identical on every rank)."""
    generator = torch.Generator().manual_seed(0)
    visual = torch.randn(WORLD * LOCAL_BATCH, 6, generator=generator, dtype=torch.float64)
    text = torch.randn(WORLD * LOCAL_BATCH, 5, generator=generator, dtype=torch.float64)
    torch.manual_seed(1)
    visual_tower = torch.nn.Linear(6, 3).double()
    text_tower = torch.nn.Linear(5, 3).double()
    log_temperature = torch.tensor(-2.0, dtype=torch.float64, requires_grad=True)
    return visual, text, visual_tower, text_tower, log_temperature


def _parameters(*modules: torch.nn.Module) -> list[torch.Tensor]:
    return [p for module in modules for p in module.parameters()]


def _embed(tower: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(tower(x), dim=1)


def _worker(rank: int, port: int, results: mp.Queue) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        visual, text, visual_tower, text_tower, log_temperature = _problem()
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)
        v_local, t_local = _embed(visual_tower, visual[rows]), _embed(text_tower, text[rows])
        v_all, t_all = all_gather_with_grad(v_local), all_gather_with_grad(t_local)
        ids_all = all_gather_with_grad(IDS[rows])
        mask = positive_mask_from_ids(IDS[rows], ids_all)
        temperature = log_temperature.exp()
        loss = 0.5 * (
            info_nce(v_local @ t_all.t() / temperature, mask) + info_nce(t_local @ v_all.t() / temperature, mask)
        )
        loss.backward()
        grads = [p.grad.numpy().copy() for p in _parameters(visual_tower, text_tower)]
        grads.append(log_temperature.grad.numpy().copy())
        uneven = gather_uneven(torch.arange(rank + 2, dtype=torch.float64) + 10 * rank)
        results.put(
            (
                rank,
                float(loss),
                grads,
                local_positive_offset(LOCAL_BATCH),
                torch.equal(ids_all, IDS),
                uneven.numpy(),
            )
        )
        dist.destroy_process_group()
    except Exception:  # the parent reports the child's traceback instead of timing out
        results.put((rank, traceback.format_exc()))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.timeout(120)
def test_gathered_local_loss_matches_full_batch_gradients() -> None:
    context = mp.get_context("fork")
    results = context.Queue()
    port = _free_port()
    processes = [context.Process(target=_worker, args=(rank, port, results)) for rank in range(WORLD)]
    for process in processes:
        process.start()
    try:
        received = [results.get(timeout=90) for _ in range(WORLD)]
    except queue.Empty:
        pytest.fail("a gloo worker did not report within 90 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    for item in received:
        assert len(item) == 6, f"worker {item[0]} failed:\n{item[1]}"
    by_rank = {item[0]: item for item in received}

    visual, text, visual_tower, text_tower, log_temperature = _problem()
    mask = positive_mask_from_ids(IDS, IDS)
    full = symmetric_info_nce(_embed(visual_tower, visual) @ _embed(text_tower, text).t(), mask, log_temperature.exp())
    full.backward()
    reference = [p.grad.numpy() for p in _parameters(visual_tower, text_tower)] + [log_temperature.grad.numpy()]

    assert np.mean([by_rank[r][1] for r in range(WORLD)]) == pytest.approx(full.item(), rel=1e-12)
    for index, expected in enumerate(reference):
        averaged = np.mean([by_rank[r][2][index] for r in range(WORLD)], axis=0)
        np.testing.assert_allclose(averaged, expected, rtol=1e-6, atol=1e-9)
        assert not np.allclose(by_rank[0][2][index], expected, rtol=1e-6, atol=1e-9)
    assert [by_rank[r][3] for r in range(WORLD)] == [0, LOCAL_BATCH]
    assert all(by_rank[r][4] for r in range(WORLD))
    for r in range(WORLD):
        np.testing.assert_array_equal(by_rank[r][5], [0.0, 1.0, 10.0, 11.0, 12.0])


def test_helpers_are_identity_without_process_group() -> None:
    assert not is_distributed()
    x = torch.randn(3, 2, requires_grad=True)
    assert all_gather_with_grad(x) is x
    assert torch.equal(gather_uneven(x), x)
    assert local_positive_offset(8) == 0


def _method_batch(rows: slice) -> dict:
    """Training batch rows of a fixed 8-item problem (visual ids repeat within and across ranks)."""
    generator = torch.Generator().manual_seed(5)
    visual = torch.randn(WORLD * LOCAL_BATCH, 1, 6, generator=generator, dtype=torch.float64)
    ids = torch.randint(1, 40, (WORLD * LOCAL_BATCH, 5), generator=generator)
    tokens = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    return {
        "visual": visual[rows],
        "visual_mask": torch.ones(LOCAL_BATCH if rows.start is not None else len(IDS), 1, dtype=torch.bool),
        "visual_index": IDS[rows],
        "text": {role: {k: v[rows] for k, v in tokens.items()} for role in ("source", "target")},
        "caption_ids": [f"{int(i)}#enc#{n}" for n, i in enumerate(IDS[rows])],
    }


def _method(objective: str, mask_same_item: bool, gather: bool, local_loss: bool):
    from leccr_lightning.methods.baseline import DualEncoderBaseline
    from leccr_lightning.methods.objectives import InfoNCEObjective, TripletObjective

    torch.manual_seed(3)
    made = TripletObjective() if objective == "triplet" else InfoNCEObjective()
    model = DualEncoderBaseline(
        visual_dim=6,
        vocab_size=40,
        text_hidden=8,
        text_layers=1,
        text_heads=2,
        visual_hidden=8,
        embed_dim=4,
        objective=made,
        mask_same_item=mask_same_item,
        gather_negatives=gather,
        local_loss=local_loss,
    )
    return model.double().eval()  # no dropout: every process must compute the same function


def _method_worker(rank: int, port: int, results: mp.Queue, case: tuple) -> None:
    try:
        torch.set_num_threads(1)
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD)
        model = _method(*case)
        loss = model.compute_losses(_method_batch(slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH)))["loss"]
        loss.backward()
        results.put((rank, [p.grad.numpy().copy() for p in model.parameters() if p.grad is not None]))
        dist.destroy_process_group()
    except Exception:
        results.put((rank, traceback.format_exc()))


@pytest.mark.ddp
@pytest.mark.timeout(180)
@pytest.mark.parametrize("objective", ["triplet", "infonce"])
@pytest.mark.parametrize("mask_same_item", [True, False])
@pytest.mark.parametrize("local_loss", [False, True], ids=["global", "local"])
def test_method_gathered_negatives_give_the_one_process_gradients(objective, mask_same_item, local_loss) -> None:
    """The baseline over 2 gloo processes with cross-rank negatives, in the global form ((W B)^2 scores on every
    rank) and the local form (own rows and columns against every rank's): DDP-averaged gradients equal one process
    with the whole batch (the triplet's sum and InfoNCE's mean alike)."""
    context = mp.get_context("fork")
    results = context.Queue()
    port = _free_port()
    case = (objective, mask_same_item, True, local_loss)
    processes = [context.Process(target=_method_worker, args=(r, port, results, case)) for r in range(WORLD)]
    for process in processes:
        process.start()
    try:
        received = dict(results.get(timeout=150) for _ in range(WORLD))
    except queue.Empty:
        pytest.fail("a gloo worker did not report within 150 s")
    finally:
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
    for rank, item in received.items():
        assert isinstance(item, list), f"worker {rank} failed:\n{item}"
    single = _method(objective, mask_same_item, False, False)
    single.compute_losses(_method_batch(slice(None)))["loss"].backward()
    reference = [p.grad.numpy() for p in single.parameters() if p.grad is not None]
    assert len(reference) == len(received[0])
    for index, expected in enumerate(reference):
        averaged = np.mean([received[r][index] for r in range(WORLD)], axis=0)
        np.testing.assert_allclose(averaged, expected, rtol=1e-7, atol=1e-10)
