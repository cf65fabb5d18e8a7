"""Temporal sentence grounding data: annotation readers, per-clip features, Dataset and DataModule.

Spec: grounding_methods §5. One record schema (``GroundingRecord``) for QVHighlights jsonl (native),
Charades-STA ``<vid> <start> <end>##<sentence>`` text files (durations from ``Charades_v1_*.csv`` or
``charades.json``) and TACoS 2D-TAN json (frames -> seconds). Video features are one ``{vid}.npz`` (key
``features``) or ``{vid}.npy`` per video and folder; the folders are cut to the shortest stream, each
L2-normalised per row and concatenated, then the temporal endpoint feature [t/L, (t+1)/L] is appended (§1.1).
Queries come as precomputed token features (one file per query, ``qid{qid}.npz``, key ``last_hidden_state``),
as query text tokenised for a Hugging Face text encoder in the model (``tokenizer``), or both. Span targets
are normalised by the annotated duration in training and de-normalised by it at inference (one normaliser,
§1.1).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.text import TokenizedTexts, load_or_train_tokenizer

FORMATS = ("auto", "qvhighlights", "charades_sta", "tacos")


@dataclass
class GroundingRecord:
    """One query: its id, text, video, duration (s), GT windows [N, 2] (s), optional per-clip saliency."""

    qid: int | str
    query: str
    vid: str
    duration: float
    windows: np.ndarray
    relevant_clip_ids: list[int] | None = None
    saliency_scores: np.ndarray | None = None

    def to_official(self) -> dict[str, Any]:
        """The record as an official QVHighlights ground-truth dict (the input ``grounding_report``
        expects)."""
        out: dict[str, Any] = {
            "qid": self.qid,
            "query": self.query,
            "vid": self.vid,
            "duration": self.duration,
            "relevant_windows": self.windows.tolist(),
        }
        if self.relevant_clip_ids is not None and self.saliency_scores is not None:
            out["relevant_clip_ids"] = list(self.relevant_clip_ids)
            out["saliency_scores"] = self.saliency_scores.tolist()
        return out


def _check_windows(path: Path, qid: Any, windows: np.ndarray, duration: float) -> None:
    """Windows must be [N, 2] with 0 <= start < end <= duration."""
    if windows.ndim != 2 or windows.shape[1] != 2:
        raise DataFormatError(path, f"qid {qid}", f"relevant_windows must be a list of [start, end], got {windows}")
    bad = (windows[:, 0] < 0) | (windows[:, 1] > duration) | (windows[:, 0] >= windows[:, 1])
    if bad.any():
        raise DataFormatError(
            path,
            f"qid {qid}",
            f"window {windows[bad][0].tolist()} is outside the video [0, {duration}] or empty; "
            "expected 0 <= start < end <= duration",
        )


def read_qvhighlights(path: str | Path, require_windows: bool = True) -> list[GroundingRecord]:
    """Read a QVHighlights jsonl file (§5.1); the test release without windows needs
    ``require_windows=False``."""
    path = Path(path)
    records, seen = [], set()
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataFormatError(path, line_no, f"not a JSON object ({err.msg})") from err
        missing = [k for k in ("qid", "query", "vid", "duration") if k not in d]
        if require_windows and "relevant_windows" not in d:
            missing.append("relevant_windows")
        if missing:
            raise DataFormatError(path, line_no, f"qid {d.get('qid')}: missing field(s) {missing}")
        qid = d["qid"]
        if qid in seen:
            raise DataFormatError(path, line_no, f"qid {qid} appears twice")
        seen.add(qid)
        duration = float(d["duration"])
        windows = np.asarray(d.get("relevant_windows", []), dtype=float).reshape(-1, 2)
        _check_windows(path, qid, windows, duration)
        clip_ids, saliency = d.get("relevant_clip_ids"), d.get("saliency_scores")
        if saliency is not None:
            saliency = np.asarray(saliency, dtype=float)
            if clip_ids is None or saliency.shape != (len(clip_ids), 3):
                raise DataFormatError(
                    path, f"qid {qid}", "saliency_scores must hold 3 scores per entry of relevant_clip_ids"
                )
        records.append(GroundingRecord(qid, d["query"], d["vid"], duration, windows, clip_ids, saliency))
    return records


def read_charades_durations(path: str | Path) -> dict[str, float]:
    """Video durations (s) from ``Charades_v1_*.csv`` (columns ``id``, ``length``) or ``charades.json``."""
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        return {vid: float(v["duration"]) for vid, v in data.items()}
    with path.open(encoding="utf-8", newline="") as f:
        return {row["id"]: float(row["length"]) for row in csv.DictReader(f)}


def read_charades_sta(path: str | Path, durations: Mapping[str, float], qid_offset: int = 0) -> list[GroundingRecord]:
    """Read ``<vid> <start> <end>##<sentence>`` lines (§5.2); qid = ``qid_offset`` + line position.

    Windows are clamped to [0, duration] (1,802 train windows end after the video); one that is empty after
    clamping is an error.
    """
    path = Path(path)
    records = []
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for line_no, line in enumerate(lines, start=1):
        head, sep, sentence = line.partition("##")
        parts = head.split()
        if not sep or len(parts) != 3 or not sentence.strip():
            raise DataFormatError(path, line_no, "expected '<vid> <start> <end>##<sentence>'")
        vid = parts[0]
        try:
            start, end = float(parts[1]), float(parts[2])
        except ValueError as err:
            raise DataFormatError(path, line_no, f"start/end must be numbers, got {parts[1:]}") from err
        if vid not in durations:
            raise DataFormatError(path, line_no, f"no duration known for video {vid}")
        duration = durations[vid]
        window = np.array([[max(start, 0.0), min(end, duration)]])
        _check_windows(path, f"{qid_offset + line_no - 1} (line {line_no})", window, duration)
        records.append(GroundingRecord(qid_offset + line_no - 1, sentence.strip(), vid, duration, window))
    return records


def read_tacos(path: str | Path) -> list[GroundingRecord]:
    """Read a 2D-TAN TACoS json (§5.3): frame timestamps / fps -> seconds, clamped; qid = ``{vid}_{k}``."""
    path = Path(path)
    data = json.loads(path.read_text(encoding="utf-8"))
    records = []
    for key, video in data.items():
        vid = key.removesuffix(".avi")
        try:
            fps, duration = float(video["fps"]), float(video["num_frames"]) / float(video["fps"])
            pairs = list(zip(video["timestamps"], video["sentences"], strict=True))
        except (KeyError, TypeError, ValueError) as err:
            raise DataFormatError(path, key, f"expected timestamps, sentences, fps and num_frames ({err})") from err
        for k, (frames, sentence) in enumerate(pairs):
            qid = f"{vid}_{k}"
            window = np.clip(np.asarray(frames, dtype=float).reshape(1, 2) / fps, 0.0, duration)
            _check_windows(path, qid, window, duration)
            records.append(GroundingRecord(qid, sentence.strip(), vid, duration, window))
    return records


def read_annotations(
    path: str | Path,
    fmt: str = "auto",
    durations_file: str | Path | Sequence[str | Path] | None = None,
    qid_offset: int = 0,
) -> list[GroundingRecord]:
    """Dispatch on ``fmt`` (or the suffix: .jsonl QVHighlights, .txt Charades-STA, .json TACoS); Charades-STA
    reads its durations from one or several files (``Charades_v1_train.csv`` and ``..._test.csv``)."""
    path = Path(path)
    if fmt not in FORMATS:
        raise ValueError(f"annotation format must be one of {FORMATS}, got {fmt!r}")
    if not path.is_file():
        raise FileNotFoundError(f"annotation file {path} does not exist")
    if fmt == "auto":
        fmt = {".jsonl": "qvhighlights", ".txt": "charades_sta", ".json": "tacos"}.get(path.suffix, "")
        if not fmt:
            raise ValueError(f"{path}: cannot infer the annotation format from the suffix; set the format")
    if fmt == "qvhighlights":
        return read_qvhighlights(path, require_windows=False)
    if fmt == "tacos":
        return read_tacos(path)
    if durations_file is None:
        raise ValueError(f"{path}: Charades-STA needs durations_file (Charades_v1_*.csv or charades.json)")
    files = [durations_file] if isinstance(durations_file, str | Path) else list(durations_file)
    durations: dict[str, float] = {}
    for file in files:
        durations.update(read_charades_durations(file))
    return read_charades_sta(path, durations, qid_offset)


def l2_normalise(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Row-wise x / (||x||_2 + eps), the Moment-DETR normalisation (§1.1)."""
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def _load_array(path: Path, key: str, owner: str) -> np.ndarray:
    """One feature matrix from ``.npz`` (by key) or ``.npy``; errors name the file and the query/video id."""
    if not path.is_file():
        raise DataFormatError(path, owner, "feature file is missing")
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    with np.load(path) as z:
        if key not in z:
            raise DataFormatError(path, owner, f"no key {key!r} in the npz (keys: {list(z.keys())})")
        return z[key].astype(np.float32)


def _find(folder: Path, stem: str) -> Path:
    """``folder/stem.npz`` if present, else ``folder/stem.npy`` (which may not exist: the loader reports
    it)."""
    npz = folder / f"{stem}.npz"
    return npz if npz.is_file() else folder / f"{stem}.npy"


def temporal_endpoint_feature(length: int) -> np.ndarray:
    """TEF rows [t / L, (t + 1) / L] for t = 0..L-1 (§1.1, ``ctx_mode=video_tef``)."""
    t = np.arange(length, dtype=np.float32)[:, None]
    return np.concatenate([t / length, (t + 1) / length], axis=1)


class ClipFeatures:
    """Per-video clip features from several folders: cut to the shortest, L2-normalised, concatenated, +
    TEF."""

    def __init__(
        self,
        folders: Sequence[str | Path],
        key: str = "features",
        max_clips: int = 75,
        normalise: bool = True,
        use_tef: bool = True,
    ) -> None:
        if not folders:
            raise ValueError("video_feature_dirs must name at least one folder")
        self.folders = [Path(f) for f in folders]
        self.key, self.max_clips, self.normalise, self.use_tef = key, max_clips, normalise, use_tef

    @property
    def dim(self) -> int:
        """Row width: the folders' widths summed (read from one file each), + 2 with TEF."""
        total = 0
        for folder in self.folders:
            first = next((p for p in sorted(folder.glob("*")) if p.suffix in (".npz", ".npy")), None)
            if first is None:
                raise FileNotFoundError(f"video feature folder {folder} holds no .npz/.npy file")
            total += _load_array(first, self.key, first.stem).shape[-1]
        return total + (2 if self.use_tef else 0)

    def load(self, vid: str, qid: Any = None) -> np.ndarray:
        """[L, D] features of ``vid`` (L <= max_clips when max_clips > 0)."""
        owner = f"vid {vid}" + (f" (qid {qid})" if qid is not None else "")
        streams = [_load_array(_find(folder, vid), self.key, owner) for folder in self.folders]
        length = min(len(s) for s in streams)
        if self.max_clips > 0:
            length = min(length, self.max_clips)
        if length == 0:
            raise DataFormatError(_find(self.folders[0], vid), owner, "video has no feature rows")
        streams = [l2_normalise(s[:length]) if self.normalise else s[:length] for s in streams]
        if self.use_tef:
            streams.append(temporal_endpoint_feature(length))
        return np.concatenate(streams, axis=1)


class QueryFeatures:
    """Per-query token features ``<folder>/<template.format(qid=...)>`` (key ``last_hidden_state``)."""

    def __init__(
        self,
        folder: str | Path,
        key: str = "last_hidden_state",
        template: str = "qid{qid}",
        max_tokens: int = 32,
        normalise: bool = True,
    ) -> None:
        self.folder, self.key, self.template = Path(folder), key, template
        self.max_tokens, self.normalise = max_tokens, normalise

    @property
    def dim(self) -> int:
        """Token feature width, read from one file."""
        first = next((p for p in sorted(self.folder.glob("*")) if p.suffix in (".npz", ".npy")), None)
        if first is None:
            raise FileNotFoundError(f"text feature folder {self.folder} holds no .npz/.npy file")
        return _load_array(first, self.key, first.stem).shape[-1]

    def load(self, qid: Any) -> np.ndarray:
        """[Lq, D] token features of query ``qid`` (Lq <= max_tokens)."""
        feats = _load_array(_find(self.folder, self.template.format(qid=qid)), self.key, f"qid {qid}")
        feats = feats.reshape(-1, feats.shape[-1])[: self.max_tokens]
        return l2_normalise(feats) if self.normalise else feats


def kmeans_spans(spans: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """K-means (Lloyd, Euclidean on normalised (c, w), k-means++ seeding, best of ``n_init``) of GT spans
    [N, 2] -> centres [k, 2] sorted by center, deterministic for a seed (spec grounding_methods §3.2)."""
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    if len(spans) < k:
        raise ValueError(f"k-means needs at least k={k} spans, got {len(spans)}")
    rng = np.random.default_rng(seed)
    best, best_inertia = None, np.inf
    for _ in range(n_init):
        centres = spans[[rng.integers(len(spans))]]
        while len(centres) < k:
            d2 = ((spans[:, None] - centres[None]) ** 2).sum(-1).min(1)
            probs = d2 / d2.sum() if d2.sum() > 0 else np.full(len(spans), 1 / len(spans))
            centres = np.vstack([centres, spans[rng.choice(len(spans), p=probs)]])
        for _ in range(iters):
            assign = ((spans[:, None] - centres[None]) ** 2).sum(-1).argmin(1)
            moved = np.array([spans[assign == j].mean(0) if (assign == j).any() else centres[j] for j in range(k)])
            if np.allclose(moved, centres):
                break
            centres = moved
        inertia = ((spans - centres[assign]) ** 2).sum()
        if inertia < best_inertia:
            best, best_inertia = centres, inertia
    return best[np.argsort(best[:, 0], kind="stable")].clip(0.0, 1.0)


def normalised_spans(records: Sequence[GroundingRecord]) -> np.ndarray:
    """All GT windows of ``records`` as (c, w) normalised by each video's duration, [N, 2]."""
    rows = [
        np.stack([(r.windows[:, 0] + r.windows[:, 1]) / 2, r.windows[:, 1] - r.windows[:, 0]], 1) / r.duration
        for r in records
        if len(r.windows)
    ]
    return np.concatenate(rows) if rows else np.zeros((0, 2))


def span_xx_to_cxw(xx: torch.Tensor) -> torch.Tensor:
    """(start, end) -> (center, width)."""
    return torch.stack([(xx[..., 0] + xx[..., 1]) / 2, xx[..., 1] - xx[..., 0]], dim=-1)


def clip_saliency(record: GroundingRecord, n_clips: int, clip_len: float) -> np.ndarray:
    """Per-clip saliency [n_clips]: the 3 annotator scores summed (0-12) for QVHighlights (§2.3); without
    annotations, 1 for clips overlapping a GT window (clip k covers [k * clip_len, (k + 1) * clip_len))."""
    out = np.zeros(n_clips, dtype=np.float32)
    if record.saliency_scores is not None and record.relevant_clip_ids is not None:
        ids = np.asarray(record.relevant_clip_ids, dtype=int)
        keep = ids < n_clips
        out[ids[keep]] = record.saliency_scores.sum(axis=1)[keep]
        return out
    for st, ed in record.windows:
        first = int(st // clip_len)
        last = min(int(np.ceil(ed / clip_len)), n_clips)
        out[first:last] = 1.0
    return out


def sample_saliency_pairs(saliency: np.ndarray, generator: torch.Generator | None = None) -> tuple[list, list]:
    """Two positive and two negative clip indices for the hinge loss (§2.3).

    Positives: the highest-scored relevant clip and a random relevant clip; negatives: the lowest-scored
    relevant clip (inside the moment) and a random clip outside. Without an outside pool the lowest relevant
    clip is used twice; without relevant clips random clips are drawn.
    """
    relevant = np.flatnonzero(saliency > 0)
    outside = np.flatnonzero(saliency <= 0)

    def pick(pool: np.ndarray) -> int:
        return int(pool[torch.randint(len(pool), (1,), generator=generator).item()])

    if len(relevant) == 0:
        everything = np.arange(len(saliency))
        return [pick(everything), pick(everything)], [pick(everything), pick(everything)]
    hard_pos = int(relevant[np.argmax(saliency[relevant])])
    hard_neg = int(relevant[np.argmin(saliency[relevant])])
    easy_neg = pick(outside) if len(outside) else hard_neg
    return [hard_pos, pick(relevant)], [hard_neg, easy_neg]


class GroundingDataset(Dataset):
    """Query-level items: clip features, query token features (when ``text`` is given), normalised (c, w)
    targets, saliency labels. ``tokens`` holds the split's queries tokenised once (row = item index); the
    collate function pads them per batch."""

    def __init__(
        self,
        records: Sequence[GroundingRecord],
        video: ClipFeatures,
        text: QueryFeatures | None,
        clip_len: float = 2.0,
        max_windows: int = 5,
        train: bool = False,
        tokens: TokenizedTexts | None = None,
    ) -> None:
        self.records = list(records)
        self.video, self.text, self.tokens = video, text, tokens
        self.clip_len, self.max_windows, self.train = clip_len, max_windows, train

    def __len__(self) -> int:
        return len(self.records)

    def ground_truth(self) -> list[dict[str, Any]]:
        """The official GT dicts, in dataset order (positions = ``index`` in batches)."""
        return [r.to_official() for r in self.records]

    def __getitem__(self, index: int) -> dict[str, Any]:
        rec = self.records[index]
        visual = torch.from_numpy(self.video.load(rec.vid, rec.qid))
        windows = torch.from_numpy(rec.windows).float()
        if self.train and len(windows) > self.max_windows:  # §5.1: shuffle and keep max_windows in training
            windows = windows[torch.randperm(len(windows))[: self.max_windows]]
        saliency = clip_saliency(rec, len(visual), self.clip_len)
        pos, neg = sample_saliency_pairs(saliency)
        item = {
            "index": index,
            "qid": rec.qid,
            "vid": rec.vid,
            "duration": rec.duration,
            "visual": visual,
            "spans": span_xx_to_cxw(windows / rec.duration).clamp(0.0, 1.0),
            "saliency": torch.from_numpy(saliency),
            "saliency_pos": torch.tensor(pos),
            "saliency_neg": torch.tensor(neg),
        }
        if self.text is not None:
            item["text"] = torch.from_numpy(self.text.load(rec.qid))
        return item


def _pad(seqs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack [L_i, ...] tensors into [B, L_max, ...] zero-padded, with a bool mask [B, L_max] (True =
    valid)."""
    longest = max(len(s) for s in seqs)
    out = seqs[0].new_zeros((len(seqs), longest, *seqs[0].shape[1:]))
    mask = torch.zeros(len(seqs), longest, dtype=torch.bool)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
        mask[i, : len(s)] = True
    return out, mask


def collate_grounding(items: Sequence[dict[str, Any]], tokens: TokenizedTexts | None = None) -> dict[str, Any]:
    """Batch: ``visual`` [B, T, Dv] + ``visual_mask``, ``spans`` (list of [N_i, 2] normalised (c, w)),
    ``saliency`` [B, T], ``saliency_pos``/``saliency_neg`` [B, 2], ``index`` [B], ``duration`` [B],
    ``qid``/``vid`` lists; ``text`` [B, Lq, Dt] + ``text_mask`` when the items carry token features, and
    ``tokens`` = {``input_ids``, ``attention_mask``} [B, L] (rows ``index`` of ``tokens``) when given."""
    visual, visual_mask = _pad([it["visual"] for it in items])
    saliency, _ = _pad([it["saliency"] for it in items])
    batch = {
        "visual": visual,
        "visual_mask": visual_mask,
        "spans": [it["spans"] for it in items],
        "saliency": saliency,
        "saliency_pos": torch.stack([it["saliency_pos"] for it in items]),
        "saliency_neg": torch.stack([it["saliency_neg"] for it in items]),
        "index": torch.tensor([it["index"] for it in items], dtype=torch.long),
        "duration": torch.tensor([it["duration"] for it in items], dtype=torch.float64),
        "qid": [it["qid"] for it in items],
        "vid": [it["vid"] for it in items],
    }
    if "text" in items[0]:
        batch["text"], batch["text_mask"] = _pad([it["text"] for it in items])
    if tokens is not None:
        batch["tokens"] = tokens.batch(batch["index"].numpy())
    return batch


class GroundingDataModule(L.LightningDataModule):
    """Train/val/test/predict splits of a grounding collection (QVHighlights layout, Charades-STA, TACoS).

    Relative paths resolve against ``root``. ``visual_dim``/``text_dim`` are read from one feature file each,
    so the CLI can link them to the model right after ``__init__``. Charades-STA has no val split: point
    ``val_file`` at the test file to follow the upstream protocol (§2.4, selection on test), and say so.

    Queries: ``text_feature_dir`` serves precomputed token features (``batch["text"]``; ``None`` turns them
    off); ``tokenizer`` serves the query text tokenised once per split (``batch["tokens"]``, at most
    ``max_q_l`` tokens with the special ones) for a text encoder in the model: ``"train"`` is a WordPiece of
    ``tokenizer_vocab_size`` trained on the training queries and cached in ``<root>/cache`` (shared by every
    later run), or a local tokenizer directory. ``vocab_size`` is then linked into the model.
    """

    def __init__(
        self,
        root: str = ".",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        annotation_format: str = "auto",
        durations_file: str | list[str] | None = None,
        video_feature_dirs: Sequence[str] = ("features/video",),
        video_feature_key: str = "features",
        text_feature_dir: str | None = "features/text",
        text_feature_key: str = "last_hidden_state",
        text_file_template: str = "qid{qid}",
        clip_len: float = 2.0,
        max_v_l: int = 75,
        max_q_l: int = 32,
        use_tef: bool = True,
        normalize_video: bool = True,
        normalize_text: bool = True,
        tokenizer: str | None = None,
        tokenizer_vocab_size: int = 2000,
        max_windows: int = 5,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.files = {
            "fit": train_file,
            "validate": val_file,
            "test": test_file,
            "predict": predict_file or test_file,
        }
        self.video = ClipFeatures(
            [self.root / d for d in video_feature_dirs], video_feature_key, max_v_l, normalize_video, use_tef
        )
        if text_feature_dir is None and tokenizer is None:
            raise ValueError(
                "the queries need data.init_args.text_feature_dir (precomputed token features) or "
                "data.init_args.tokenizer ('train' or a local tokenizer directory), or both"
            )
        if tokenizer == "train" and train_file is None:
            raise ValueError("tokenizer 'train' learns its vocabulary from the training queries: set train_file")
        self.text: QueryFeatures | None = None
        if text_feature_dir is not None:
            folder = self.root / text_feature_dir
            self.text = QueryFeatures(folder, text_feature_key, text_file_template, max_q_l, normalize_text)
        self.datasets: dict[str, GroundingDataset] = {}
        self._records: dict[str, list[GroundingRecord]] = {}

    @property
    def visual_dim(self) -> int:
        """Width of a video feature row (all folders + TEF)."""
        return self.video.dim

    @property
    def text_dim(self) -> int | None:
        """Width of a query token feature row (``None`` without precomputed text features)."""
        return None if self.text is None else self.text.dim

    @cached_property
    def tokenizer(self):
        """The query tokenizer (``None`` unless ``tokenizer`` is set): trained once on the training queries and
        cached, or loaded from a local directory."""
        spec = self.hparams.tokenizer
        if spec is None:
            return None
        corpus = [r.query for r in self.records("fit")] if spec == "train" else []
        return load_or_train_tokenizer(spec, corpus, self.root / "cache", self.hparams.tokenizer_vocab_size)

    @property
    def vocab_size(self) -> int | None:
        """Tokenizer vocabulary size, linked into the model's text encoder (``None`` without a tokenizer)."""
        return None if self.tokenizer is None else len(self.tokenizer)

    def records(self, split: str) -> list[GroundingRecord]:
        """The annotation records of ``split`` in {fit, validate, test, predict}, read once."""
        if split not in self._records:
            name = self.files[split]
            if name is None:
                raise ValueError(f"no annotation file configured for the {split!r} split")
            hp = self.hparams
            self._records[split] = read_annotations(self.root / name, hp.annotation_format, self._durations())
        return self._records[split]

    def dataset(self, split: str) -> GroundingDataset:
        """The dataset of ``split``, built once (queries tokenised once when a tokenizer is set)."""
        if split not in self.datasets:
            hp, records = self.hparams, self.records(split)
            tokens = None
            if self.tokenizer is not None:
                tokens = TokenizedTexts(self.tokenizer, [r.query for r in records], hp.max_q_l)
            self.datasets[split] = GroundingDataset(
                records, self.video, self.text, hp.clip_len, hp.max_windows, train=split == "fit", tokens=tokens
            )
        return self.datasets[split]

    def _durations(self) -> list[Path] | None:
        files = self.hparams.durations_file
        if files is None:
            return None
        return [self.root / f for f in ([files] if isinstance(files, str) else files)]

    def setup(self, stage: str) -> None:
        wanted = {
            "fit": ["fit", "validate"],
            "validate": ["validate"],
            "test": ["test"],
            "predict": ["predict"],
        }
        for split in wanted[stage]:
            if self.files[split] is not None:
                self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        size = self.hparams.batch_size if shuffle else self.hparams.eval_batch_size or self.hparams.batch_size
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=partial(collate_grounding, tokens=dataset.tokens),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
