"""RGTR span anchors (spec grounding_methods §3.2): the k-means centres of the training GT spans, and their file.

The clustering is scipy's ``kmeans2`` (Lloyd, k-means++ seeding, Euclidean on duration-normalised (c, w)), the best
of ``n_init`` seeded runs by inertia (an emptied cluster keeps its centre, with scipy's warning). ``leccr anchors``
(``tools/anchors.py``) writes the centres as json; RGTR reads them back with ``load_anchors``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from scipy.cluster.vq import kmeans2

from leccr_lightning.data.grounding.annotations import GroundingRecord
from leccr_lightning.data.grounding.spans import span_xx_to_cxw


def normalised_spans(records: Sequence[GroundingRecord]) -> np.ndarray:
    """All GT windows of ``records`` as (c, w) of the windows divided by each video's duration, [N, 2]."""
    rows = [span_xx_to_cxw(torch.from_numpy(r.windows / r.duration)).numpy() for r in records if len(r.windows)]
    return np.concatenate(rows) if rows else np.zeros((0, 2))


def kmeans_spans(spans: np.ndarray, k: int, seed: int = 0, n_init: int = 10, iters: int = 100) -> np.ndarray:
    """K-means centres [k, 2] of spans [N, 2] (best inertia of ``n_init`` runs of ``kmeans2(minit="++")``), sorted
    by center and clipped to [0, 1]; deterministic for a seed."""
    spans = np.asarray(spans, dtype=np.float64).reshape(-1, 2)
    distinct = len(np.unique(spans, axis=0))
    if distinct < k:
        raise ValueError(f"k-means needs at least k={k} distinct spans, got {distinct} (of {len(spans)})")
    rng = np.random.default_rng(seed)
    runs = [kmeans2(spans, k, iter=iters, minit="++", seed=rng, missing="warn") for _ in range(n_init)]
    centres, _ = min(runs, key=lambda run: float(((spans - run[0][run[1]]) ** 2).sum()))
    return centres[np.argsort(centres[:, 0], kind="stable")].clip(0.0, 1.0)


def load_anchors(path: str | Path) -> np.ndarray:
    """Anchor centres [K, 2] from a ``tools.anchors`` json (``{"anchors": [[c, w], ...]}``) or ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"anchors file {path} does not exist (write it with `leccr anchors`)")
    data = np.load(path) if path.suffix == ".npy" else np.asarray(json.loads(path.read_text())["anchors"])
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2 or data.shape[1] != 2 or (data < 0).any() or (data > 1).any():
        raise ValueError(f"{path}: expected anchors [K, 2] of normalised (c, w) in [0, 1], got shape {data.shape}")
    return data
