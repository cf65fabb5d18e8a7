"""The fused CPU counting kernel equals the plain torch counts, and the ranking core reports the same numbers with it
as with the torch counting path it replaces on the CPU (the path CUDA blocks take), for query-major and item-major
blocks alike."""

from __future__ import annotations

import pytest
import torch

from leccr_lightning.metrics import counting, scoring
from leccr_lightning.metrics.counting import count_block, fused_counting, item_major
from leccr_lightning.metrics.ranking import retrieval_report, retrieval_report_from_views
from leccr_lightning.metrics.scoring import DotScorer


def reference_counts(block: torch.Tensor, row_thresholds: torch.Tensor, level_thresholds: torch.Tensor):
    """The three counts of ``count_block`` written out with torch comparisons."""
    row_counts = (block > row_thresholds[:, None]).sum(1).double()
    level_counts = (block[None] > level_thresholds[:, None, :]).sum(1).double()
    return row_counts, block.sum(1).float(), level_counts


def tied_block(rows: int, width: int, generator: torch.Generator, dtype=torch.float32) -> torch.Tensor:
    """Scores on a coarse grid, so that many equal a threshold drawn from the same grid."""
    return (torch.randint(-4, 5, (rows, width), generator=generator) / 4).to(dtype)


@pytest.mark.parametrize("rows", [1, 3, 4, 7, 13])
@pytest.mark.parametrize("width", [1, 17, 300])
@pytest.mark.parametrize("levels", [0, 1, 5])
@pytest.mark.parametrize("item_rows", [False, True], ids=["query-major", "item-major"])
def test_counts_equal_torch_with_ties_and_infinite_thresholds(rows, width, levels, item_rows):
    generator = torch.Generator().manual_seed(rows * 1000 + width * 10 + levels)
    block = tied_block(width, rows + 3, generator)[:, :rows].T if item_rows else tied_block(rows, width, generator)
    assert item_major(block) == item_rows or rows == width == 1  # a 1 x 1 block is both
    row_thresholds = tied_block(1, rows, generator)[0]
    level_thresholds = tied_block(levels, width, generator)
    if levels:
        level_thresholds[-1, ::3] = float("inf")
    row_counts = torch.full((rows,), 2.0, dtype=torch.float64)
    row_sums = torch.full((rows,), 0.5)
    level_counts = torch.ones(levels, width, dtype=torch.float64)
    count_block(block, row_thresholds, level_thresholds, row_counts, row_sums, level_counts)
    expected_rows, expected_sums, expected_levels = reference_counts(block, row_thresholds, level_thresholds)
    assert torch.equal(row_counts, expected_rows + 2)
    assert torch.equal(level_counts, expected_levels + 1)
    assert torch.allclose(row_sums, expected_sums + 0.5)


def test_padded_transposed_and_float64_blocks_and_strided_outputs():
    generator = torch.Generator().manual_seed(0)
    padded = torch.randn(9, 48, generator=generator)
    for block in (padded[:, :37], padded[:, 5:40], padded.T[:37], padded[:, :37].double(), padded.double().T[3:40]):
        levels = torch.randn(3, block.shape[1], generator=generator, dtype=block.dtype)
        counts_table = torch.zeros(3, block.shape[1] + 11, dtype=torch.float64)
        row_counts = torch.zeros(block.shape[0], dtype=torch.float64)
        row_sums = torch.zeros(block.shape[0])
        level_counts = counts_table[:, 4 : 4 + block.shape[1]]
        row_thresholds = torch.randn(block.shape[0], generator=generator, dtype=block.dtype)
        count_block(block, row_thresholds, levels, row_counts, row_sums, level_counts)
        expected_rows, expected_sums, expected_levels = reference_counts(block, row_thresholds, levels)
        assert torch.equal(row_counts, expected_rows)
        assert torch.equal(level_counts, expected_levels)
        assert torch.allclose(row_sums, expected_sums, atol=1e-5)
        assert not counts_table[:, :4].any() and not counts_table[:, 4 + block.shape[1] :].any()


def test_nan_never_counts_and_poisons_the_row_sum():
    block = torch.tensor([[0.5, float("nan"), 0.9, -1.0], [0.1, 0.2, 0.3, 0.4]])
    row_counts = torch.zeros(2, dtype=torch.float64)
    row_sums = torch.zeros(2)
    level_counts = torch.zeros(1, 4, dtype=torch.float64)
    count_block(block, torch.tensor([0.0, 0.25]), torch.full((1, 4), 0.0), row_counts, row_sums, level_counts)
    assert row_counts.tolist() == [2.0, 2.0]
    assert level_counts.tolist() == [[2.0, 1.0, 2.0, 1.0]]
    assert torch.isnan(row_sums[0]) and row_sums[1] == pytest.approx(1.0)


def test_half_precision_blocks_are_left_to_torch():
    block = torch.zeros(2, 3, dtype=torch.float16)
    assert not fused_counting(block)
    assert fused_counting(block.float()) and fused_counting(block.double())
    with pytest.raises(ValueError, match="float32/float64 CPU blocks"):
        count_block(block, torch.zeros(2), torch.zeros(0, 3), torch.zeros(2), torch.zeros(2), torch.zeros(0, 3))


def skewed_collection(seed: int):
    """Tied scores, 1-9 captions per item in shuffled order, and items without captions."""
    generator = torch.Generator().manual_seed(seed)
    captions_per_item = torch.randint(1, 10, (40,), generator=generator)
    captions_per_item[::7] = 0
    query_to_gallery = torch.repeat_interleave(torch.arange(40), captions_per_item)
    query_to_gallery = query_to_gallery[torch.randperm(query_to_gallery.numel(), generator=generator)]
    gallery = torch.randint(-2, 3, (40, 6), generator=generator).float()
    queries = gallery[query_to_gallery] + torch.randint(-2, 3, (query_to_gallery.numel(), 6), generator=generator)
    return queries.float(), gallery, query_to_gallery


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("chunk_size", [None, 16])
def test_reports_equal_the_torch_counting_path(monkeypatch, seed, chunk_size):
    queries, gallery, query_to_gallery = skewed_collection(seed)

    def reports():
        views = retrieval_report_from_views(
            {"query": queries}, {"gallery": gallery}, query_to_gallery, DotScorer(), chunk_size=chunk_size
        )
        return views, retrieval_report(queries @ gallery.T, query_to_gallery)

    fused = reports()
    monkeypatch.setattr(scoring, "ITEM_MAJOR_DEVICES", ())
    assert reports() == fused
    monkeypatch.setattr(counting, "FUSED_DEVICES", ())
    assert reports() == fused
