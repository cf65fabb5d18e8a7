"""Grounding readers, features, DataModule, synthetic writer and anchors (spec grounding_methods §5, §8)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.grounding.anchors import kmeans_spans, normalised_spans
from leccr_lightning.data.grounding.annotations import (
    GroundingRecord,
    read_annotations,
    read_charades_sta,
    read_qvhighlights,
    read_tacos,
)
from leccr_lightning.data.grounding.datamodule import GroundingDataModule
from leccr_lightning.data.grounding.saliency import (
    NO_HARD_PAIR,
    draw_saliency_pairs,
    draw_training_targets,
    saliency_labels,
)
from leccr_lightning.data.grounding.synthetic import write_grounding_collection
from leccr_lightning.tools.anchors import compute_anchors


@pytest.fixture(scope="module")
def collection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_grounding_collection(tmp_path_factory.mktemp("gsyn"), seed=3, n_queries=(48, 16, 16))


def _datamodule(root: Path, **kwargs) -> GroundingDataModule:
    return GroundingDataModule(
        root=str(root),
        train_file="annotations/highlight_train_release.jsonl",
        val_file="annotations/highlight_val_release.jsonl",
        test_file="annotations/highlight_test_release.jsonl",
        video_feature_dirs=["features/video_a", "features/video_b"],
        batch_size=8,
        **kwargs,
    )


def test_synthetic_is_deterministic_and_valid(collection: Path, tmp_path: Path) -> None:
    again = write_grounding_collection(tmp_path / "again", seed=3, n_queries=(48, 16, 16))
    other = write_grounding_collection(tmp_path / "other", seed=4, n_queries=(48, 16, 16))
    name = "annotations/highlight_train_release.jsonl"
    assert (collection / name).read_bytes() == (again / name).read_bytes()
    assert (collection / name).read_bytes() != (other / name).read_bytes()
    for rec in read_qvhighlights(collection / name):
        covered = sorted({c for st, ed in rec.windows for c in range(int(st // 2), int(np.ceil(ed / 2)))})
        assert rec.relevant_clip_ids == covered
        assert len(rec.saliency_scores) == len(rec.relevant_clip_ids)
        assert max(rec.relevant_clip_ids) < rec.duration / 2


def test_datamodule_batch_invariants(collection: Path) -> None:
    dm = _datamodule(collection)
    assert dm.visual_dim == 12 + 8 + 2 and dm.text_dim == 16
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    visual, mask = batch["visual"], batch["visual_mask"]
    assert visual.shape[-1] == dm.visual_dim and batch["text"].shape[-1] == dm.text_dim
    records = dm.dataset("validate").records
    for b, pos in enumerate(batch["index"].tolist()):
        n = int(mask[b].sum())
        assert n == records[pos].duration / 2
        assert not mask[b, n:].any() and visual[b, n:].abs().sum() == 0
        t = torch.arange(n, dtype=torch.float32) / n
        assert torch.equal(visual[b, :n, -2:], torch.stack([t, t + 1.0 / n], 1))  # TEF as upstream sums it
        assert torch.allclose(visual[b, :n, :12].norm(dim=-1), torch.ones(n), atol=1e-3)
        assert torch.allclose(visual[b, :n, 12:20].norm(dim=-1), torch.ones(n), atol=1e-3)
        spans = batch["spans"][b]
        assert (spans >= 0).all() and (spans <= 1).all() and (spans[:, 1] > 0).all()
        xx = torch.stack([spans[:, 0] - spans[:, 1] / 2, spans[:, 0] + spans[:, 1] / 2], 1) * records[pos].duration
        assert torch.allclose(xx.double(), torch.from_numpy(records[pos].windows), atol=1e-4)
        clip_ids = records[pos].relevant_clip_ids
        assert torch.equal(batch["relevant"][b, :n], torch.isin(torch.arange(n), torch.tensor(clip_ids)))
        assert not batch["relevant"][b, n:].any() and (batch["saliency"][b, n:] == 0).all()
        summed = records[pos].saliency_scores.sum(1)
        assert torch.equal(batch["saliency"][b, clip_ids], torch.tensor(summed, dtype=torch.float32))
        hard_pos, hard_neg = batch["hard_pairs"][b].tolist()
        assert summed[clip_ids.index(hard_pos)] == summed.max() and summed[clip_ids.index(hard_neg)] == summed.min()
    drawn = draw_training_targets(batch, seed=0, epoch=3, max_windows=5)
    for b in range(len(batch["index"])):
        relevant = batch["relevant"][b]
        assert relevant[drawn["saliency_pos"][b]].all() and relevant[drawn["saliency_neg"][b, 0]]
        assert not relevant[drawn["saliency_neg"][b, 1]]  # the easy negative lies outside relevant_clip_ids
        assert drawn["saliency_pos"][b, 0] == batch["hard_pairs"][b, 0]


def test_training_keeps_at_most_max_windows(collection: Path, tmp_path: Path) -> None:
    rec = {"qid": 9999, "query": "q", "vid": "synth00000_train", "duration": 40}
    rec["relevant_windows"] = [[2 * k, 2 * k + 2] for k in range(7)]
    (tmp_path / "many.jsonl").write_text(json.dumps(rec) + "\n")
    dm = GroundingDataModule(
        root=str(collection),
        train_file=str(tmp_path / "many.jsonl"),
        video_feature_dirs=["features/video_a"],
        max_windows=5,
    )
    with pytest.raises(DataFormatError, match="qid 9999"):
        dm.dataset("fit")[0]
    np.savez(collection / "features/text/qid9999.npz", last_hidden_state=np.ones((3, 16), np.float32))
    item = dm.dataset("fit")[0]
    assert len(item["spans"]) == 7  # items keep every window; training draws the subset
    batch = dm.train_dataloader().collate_fn([item])
    kept = [draw_training_targets(batch, seed=1, epoch=e, max_windows=5)["spans"][0] for e in (0, 0, 1)]
    assert all(len(k) == 5 for k in kept) and torch.equal(kept[0], kept[1]) and not torch.equal(kept[0], kept[2])
    assert all(any(torch.equal(row, w) for w in item["spans"]) for row in kept[2])


def test_bad_input_errors_name_file_and_query(tmp_path: Path, collection: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"qid": 5, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[4, 12]]}\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl.*qid 5.*outside the video"):
        read_qvhighlights(bad)
    bad.write_text('{"qid": 5, "query": "q", "vid": "v", "duration": 10, "relevant_windows": [[4, 8]]}\n{oops\n')
    with pytest.raises(DataFormatError, match=r"bad\.jsonl: line 2"):
        read_qvhighlights(bad)
    dm = _datamodule(collection)
    (collection / "features/video_b/synth00048_val.npz").rename(tmp_path / "moved.npz")
    try:
        with pytest.raises(DataFormatError, match=r"synth00048_val\.npy.*synth00048_val \(qid 48\).*missing"):
            dm.dataset("validate")[0]
    finally:
        (tmp_path / "moved.npz").rename(collection / "features/video_b/synth00048_val.npz")


def test_charades_reader_clamps_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "charades_sta_train.txt"
    path.write_text("AO8RW 0.0 6.9##a person is putting a book on a shelf.\nAO8RW 5.0 40.0##a person leaves.\n")
    (tmp_path / "Charades_v1_train.csv").write_text("id,subject,length\nAO8RW,x,30.5\n")
    records = read_annotations(path, durations_file=tmp_path / "Charades_v1_train.csv", qid_offset=10)
    assert [r.qid for r in records] == [10, 11]
    assert records[1].windows.tolist() == [[5.0, 30.5]] and records[0].query.startswith("a person is")
    path.write_text("AO8RW 0.0##missing end\n")
    with pytest.raises(DataFormatError, match="line 1"):
        read_charades_sta(path, {"AO8RW": 30.5})


def test_tacos_frames_to_seconds(tmp_path: Path) -> None:
    path = tmp_path / "train.json"
    video = {
        "timestamps": [[0, 294], [147, 9000]],
        "sentences": ["cut", "wash"],
        "fps": 29.4,
        "num_frames": 2940,
    }
    path.write_text(json.dumps({"s13-d21.avi": video}))
    records = read_tacos(path)
    assert [r.qid for r in records] == ["s13-d21_0", "s13-d21_1"]
    assert np.allclose(records[0].windows, [[0.0, 10.0]]) and np.allclose(records[1].windows, [[5.0, 100.0]])
    assert records[0].duration == pytest.approx(100.0)


def test_window_labels_and_sampler(tmp_path: Path) -> None:
    rec = GroundingRecord(1, "q", "v", 20.0, np.array([[4.0, 10.5]]))
    labels = saliency_labels(rec, 10, 2.0)  # clips int(4/2)=2 .. min(int(10.5/2), 10) - 1 = 4 (upstream rule)
    assert labels.labels.tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0] and labels.relevant.sum() == 3
    assert labels.hard_pos == labels.hard_neg == NO_HARD_PAIR
    rng = np.random.default_rng(0)
    draws = [draw_saliency_pairs(labels.relevant, NO_HARD_PAIR, NO_HARD_PAIR, rng) for _ in range(200)]
    assert all(p[0] != p[1] and n[0] != n[1] for p, n in draws)  # distinct, as random.sample(k=2)
    assert {c for p, _ in draws for c in p} == {2, 3, 4}
    assert {c for _, n in draws for c in n} == {0, 1, 5, 6, 7, 8, 9}
    one_clip = saliency_labels(GroundingRecord(2, "q", "v", 20.0, np.array([[4.0, 5.0]])), 10, 2.0)
    # upstream: st = int(4 / 2) = 2 > ed = int(5 / 2) - 1 = 1, so st = ed = 1 (start_end_dataset.py:125-128)
    assert one_clip.relevant.nonzero()[0].tolist() == [1]
    assert draw_saliency_pairs(one_clip.relevant, NO_HARD_PAIR, NO_HARD_PAIR, rng)[0] == [1, 1]
    everything = np.ones(4, dtype=bool)
    pos, neg = draw_saliency_pairs(everything, NO_HARD_PAIR, NO_HARD_PAIR, rng)
    assert pos == neg and len(set(pos)) == 2  # no outside clip: a constant hinge, no crash
    assert draw_saliency_pairs(np.zeros(4, dtype=bool), NO_HARD_PAIR, NO_HARD_PAIR, rng) == ([0, 0], [0, 0])


def test_qvhighlights_labels_ties_and_membership() -> None:
    scores = np.array([[1, 1, 1], [4, 4, 4], [0, 0, 0], [4, 4, 4], [0, 0, 0]])  # ties at the max and at the min
    rec = GroundingRecord(3, "q", "v", 20.0, np.array([[2.0, 12.0]]), [1, 2, 3, 4, 5], scores)
    labels = saliency_labels(rec, 10, 2.0)
    assert labels.relevant.nonzero()[0].tolist() == [1, 2, 3, 4, 5]  # clips 3 and 5 score 0 but are relevant
    assert labels.labels.tolist() == [0, 3, 12, 0, 12, 0, 0, 0, 0, 0]
    assert (labels.hard_pos, labels.hard_neg) == (4, 3)  # the last of the highest, the first of the lowest
    rng = np.random.default_rng(0)
    draws = [draw_saliency_pairs(labels.relevant, labels.hard_pos, labels.hard_neg, rng) for _ in range(200)]
    assert all(p[0] == 4 and n[0] == 3 for p, n in draws)
    assert {p[1] for p, _ in draws} == {1, 2, 3, 4, 5} and {n[1] for _, n in draws} == {0, 6, 7, 8, 9}
    short = saliency_labels(rec, 4, 2.0)  # features a row short: clip 4 and 5 have no row
    assert short.relevant.tolist() == [False, True, True, True] and short.hard_pos == 3 and short.hard_neg == 3
    full = GroundingRecord(4, "q", "v", 8.0, np.array([[0.0, 8.0]]), [0, 1, 2, 3], scores[:4])
    pos, neg = draw_saliency_pairs(saliency_labels(full, 4, 2.0).relevant, 3, 2, rng)
    assert pos == [3, 3] and neg == [2, 2]  # no clip outside: the hard pair twice (start_end_dataset.py:146-148)


def test_kmeans_anchors_deterministic(collection: Path, tmp_path: Path) -> None:
    spans = normalised_spans(read_qvhighlights(collection / "annotations/highlight_train_release.jsonl"))
    first, second = kmeans_spans(spans, 10, seed=1), kmeans_spans(spans, 10, seed=1)
    assert first.shape == (10, 2) and np.array_equal(first, second)
    assert (first >= 0).all() and (first <= 1).all() and (np.diff(first[:, 0]) >= 0).all()
    path = compute_anchors(collection / "annotations/highlight_train_release.jsonl", tmp_path / "a.json", k=4)
    saved = json.loads(path.read_text())
    assert saved["k"] == 4 and np.allclose(saved["anchors"], kmeans_spans(spans, 4, seed=0))
    with pytest.raises(ValueError, match="at least k=10 distinct"):
        kmeans_spans(spans[:3], 10)


def test_tokenised_queries_instead_of_features(collection: Path, tmp_path: Path) -> None:
    dm = _datamodule(collection, text_feature_dir=None, tokenizer="train", max_q_l=5)
    assert dm.text_dim is None and isinstance(dm.vocab_size, int) and dm.vocab_size == len(dm.tokenizer)
    cached = sorted((collection / "cache").glob("wordpiece-*.json"))
    assert len(cached) == 1
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    assert "text" not in batch and "text_mask" not in batch
    ids, mask = batch["tokens"]["input_ids"], batch["tokens"]["attention_mask"]
    assert ids.shape == mask.shape == (len(batch["qid"]), 5)
    records = dm.records("validate")
    for row, pos in enumerate(batch["index"].tolist()):
        tokens = dm.tokenizer.convert_ids_to_tokens(ids[row][mask[row].bool()].tolist())
        words = records[pos].query.split()
        assert tokens == ["[CLS]", *words[:3], "[SEP]"]  # max_q_l = 5 tokens with the special ones
        assert (ids[row][~mask[row].bool()] == dm.tokenizer.pad_token_id).all()
    again = _datamodule(collection, text_feature_dir=None, tokenizer="train")
    assert again.tokenizer.get_vocab() == dm.tokenizer.get_vocab()
    assert sorted((collection / "cache").glob("wordpiece-*.json")) == cached
    dm.tokenizer.save_pretrained(tmp_path / "tok")
    local = _datamodule(collection, tokenizer=str(tmp_path / "tok"), max_q_l=5)
    local.setup("fit")
    both = next(iter(local.val_dataloader()))
    assert torch.equal(both["tokens"]["input_ids"], ids) and both["text"].shape[-1] == local.text_dim == 16


def test_query_options_are_checked(collection: Path) -> None:
    with pytest.raises(ValueError, match="text_feature_dir.*tokenizer"):
        _datamodule(collection, text_feature_dir=None)
    with pytest.raises(ValueError, match="set train_file"):
        GroundingDataModule(root=str(collection), test_file="annotations/x.jsonl", tokenizer="train")
    with pytest.raises(OSError, match="neither a local directory"):
        _ = _datamodule(collection, tokenizer=str(collection / "no_such_tokenizer")).vocab_size


def test_missing_grounding_folder_error_says_how_to_make_one(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist \(`leccr synth --config"):
        GroundingDataModule(root=str(tmp_path / "nowhere"), train_file="train.jsonl")
