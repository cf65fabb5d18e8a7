"""Grounding annotations: one record schema and the readers of the three official formats (spec §5).

``GroundingRecord`` holds a query, its video, duration and GT windows (and the QVHighlights saliency scores).
Readers: QVHighlights jsonl (native; also the CG-DETR/Lighthouse conversions of Charades-STA and TACoS),
Charades-STA ``<vid> <start> <end>##<sentence>`` text files (durations from ``Charades_v1_*.csv`` or
``charades.json``) and TACoS 2D-TAN json (frames -> seconds). Every error names the file and the line or qid.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from leccr_lightning.data.errors import DataFormatError

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
        """The record as an official QVHighlights ground-truth dict (what ``grounding_report`` expects)."""
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
    """Read a QVHighlights jsonl file (§5.1); the test release without windows needs ``require_windows=False``."""
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
