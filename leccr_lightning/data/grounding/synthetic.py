"""A small learnable grounding collection written in the QVHighlights layout (spec grounding_methods §5.1).

Each video is a sequence of 2-s clips: background clips plus ``n_events`` segments, each showing one latent
concept. A query names one of the video's events: its token features are that concept's text embedding plus
noise, and its GT window is that event's segment, so a model must match the query to the right segment.
Layout under ``out``::

    annotations/highlight_{train,val,test}_release.jsonl   qid, query, vid, duration, relevant_windows,
                                                           relevant_clip_ids, saliency_scores
    features/video_a/{vid}.npz, features/video_b/{vid}.npz key ``features`` [L, D_a], [L, D_b]
    features/text/qid{qid}.npz                             ``last_hidden_state`` [Lq, D_t], ``pooler_output``
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")


def write_grounding_collection(
    out: str | Path,
    seed: int = 0,
    n_queries: tuple[int, int, int] = (256, 64, 64),
    n_concepts: int = 8,
    n_events: int = 2,
    clip_len: int = 2,
    min_clips: int = 16,
    max_clips: int = 24,
    video_dims: tuple[int, int] = (12, 8),
    text_dim: int = 16,
    query_tokens: int = 6,
    noise: float = 0.3,
) -> Path:
    """Write the collection (one video per query) and return ``out``; deterministic for a given ``seed``."""
    root = Path(out)
    rng = np.random.default_rng(seed)
    video_concepts = [rng.standard_normal((n_concepts + 1, d)) for d in video_dims]  # last row: background
    text_concepts = rng.standard_normal((n_concepts, text_dim))
    words = [f"concept{k}" for k in range(n_concepts)]
    folders = {name: root / "features" / name for name in ("video_a", "video_b", "text")}
    for folder in [*folders.values(), root / "annotations"]:
        folder.mkdir(parents=True, exist_ok=True)
    qid = 0
    for split, count in zip(SPLITS, n_queries, strict=True):
        lines = []
        for _ in range(count):
            n_clips = int(rng.integers(min_clips, max_clips + 1))
            labels = np.full(n_clips, n_concepts)
            concepts = rng.choice(n_concepts, size=n_events, replace=False)
            bounds = np.sort(rng.choice(np.arange(1, n_clips), size=2 * n_events - 1, replace=False))
            edges = np.concatenate([[0], bounds, [n_clips]])
            segments = [(int(edges[2 * e]), int(edges[2 * e + 1])) for e in range(n_events)]
            segments = [(st, max(ed, st + 1)) for st, ed in segments]
            for concept, (st, ed) in zip(concepts, segments, strict=True):
                labels[st:ed] = concept
            target = int(rng.integers(n_events))
            st, ed = segments[target]
            vid = f"synth{qid:05d}_{split}"
            for name, table in zip(("video_a", "video_b"), video_concepts, strict=True):
                feats = table[labels] + noise * rng.standard_normal((n_clips, table.shape[1]))
                np.savez(folders[name] / f"{vid}.npz", features=feats.astype(np.float32))
            tokens = text_concepts[concepts[target]] + noise * rng.standard_normal((query_tokens, text_dim))
            np.savez(
                folders["text"] / f"qid{qid}.npz",
                last_hidden_state=tokens.astype(np.float32),
                pooler_output=tokens.mean(0).astype(np.float32),
            )
            clip_ids = list(range(st, ed))
            lines.append(
                {
                    "qid": qid,
                    "query": f"the moment showing {words[concepts[target]]}",
                    "vid": vid,
                    "duration": n_clips * clip_len,
                    "relevant_windows": [[st * clip_len, ed * clip_len]],
                    "relevant_clip_ids": clip_ids,
                    "saliency_scores": rng.integers(1, 5, size=(len(clip_ids), 3)).tolist(),
                }
            )
            qid += 1
        text = "".join(json.dumps(line) + "\n" for line in lines)
        (root / "annotations" / f"highlight_{split}_release.jsonl").write_text(text, encoding="utf-8")
    return root
