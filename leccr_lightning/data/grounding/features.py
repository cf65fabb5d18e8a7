"""Per-clip video features and per-query token features of the grounding collections (spec §1.1, §5).

Video features are one ``{vid}.npz`` (key ``features``) or ``{vid}.npy`` per video and folder; the folders are cut
to the shortest stream, each L2-normalised per row and concatenated, then the temporal endpoint feature
[t/L, t/L + 1/L] is appended. Query token features are one file per query (``qid{qid}.npz``, key
``last_hidden_state``). Errors name the file and the video or query id.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from leccr_lightning.data.errors import DataFormatError


def l2_normalise(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Row-wise x / (||x||_2 + eps), the Moment-DETR normalisation (§1.1)."""
    return x / (np.linalg.norm(x, axis=-1, keepdims=True) + eps)


def load_array(path: Path, key: str, owner: str) -> np.ndarray:
    """One feature matrix from ``.npz`` (by key) or ``.npy``; errors name the file and the query/video id."""
    if not path.is_file():
        raise DataFormatError(path, owner, "feature file is missing")
    if path.suffix == ".npy":
        return np.load(path).astype(np.float32)
    with np.load(path) as z:
        if key not in z:
            raise DataFormatError(path, owner, f"no key {key!r} in the npz (keys: {list(z.keys())})")
        return z[key].astype(np.float32)


def find_feature_file(folder: Path, stem: str) -> Path:
    """``folder/stem.npz`` if present, else ``folder/stem.npy`` (which may not exist: the loader reports it)."""
    npz = folder / f"{stem}.npz"
    return npz if npz.is_file() else folder / f"{stem}.npy"


def first_row_width(folder: Path, key: str, what: str) -> int:
    """Feature width of the first ``.npz``/``.npy`` file of ``folder`` (``what`` names the folder's role)."""
    first = next((p for p in sorted(folder.glob("*")) if p.suffix in (".npz", ".npy")), None)
    if first is None:
        raise FileNotFoundError(f"{what} folder {folder} holds no .npz/.npy file")
    return load_array(first, key, first.stem).shape[-1]


def temporal_endpoint_feature(length: int) -> np.ndarray:
    """TEF rows [t / L, t / L + 1 / L] for t = 0..L-1 in float32, summed in that order as upstream
    (moment_detr/start_end_dataset.py:84-87; §1.1, ``ctx_mode=video_tef``)."""
    start = np.arange(length, dtype=np.float32)[:, None] / length
    return np.concatenate([start, start + 1.0 / length], axis=1)


class ClipFeatures:
    """Per-video clip features from several folders: cut to the shortest, L2-normalised, concatenated, + TEF."""

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
        total = sum(first_row_width(folder, self.key, "video feature") for folder in self.folders)
        return total + (2 if self.use_tef else 0)

    def load(self, vid: str, qid: Any = None) -> np.ndarray:
        """[L, D] features of ``vid`` (L <= max_clips when max_clips > 0)."""
        owner = f"vid {vid}" + (f" (qid {qid})" if qid is not None else "")
        streams = [load_array(find_feature_file(folder, vid), self.key, owner) for folder in self.folders]
        length = min(len(s) for s in streams)
        if self.max_clips > 0:
            length = min(length, self.max_clips)
        if length == 0:
            raise DataFormatError(find_feature_file(self.folders[0], vid), owner, "video has no feature rows")
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
        return first_row_width(self.folder, self.key, "text feature")

    def load(self, qid: Any) -> np.ndarray:
        """[Lq, D] token features of query ``qid`` (Lq <= max_tokens)."""
        path = find_feature_file(self.folder, self.template.format(qid=qid))
        feats = load_array(path, self.key, f"qid {qid}")
        feats = feats.reshape(-1, feats.shape[-1])[: self.max_tokens]
        return l2_normalise(feats) if self.normalise else feats
