"""``leccr anchors``: RGTR's k-means anchors of the training GT spans, saved as json (spec grounding_methods §3.2).

``leccr anchors TRAIN_FILE --k 10 --out anchors.json`` (Charades-STA's raw text format also needs
``--durations-file``); point ``model.init_args.anchors_file`` at the output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leccr_lightning.data.grounding.anchors import kmeans_spans, normalised_spans
from leccr_lightning.data.grounding.annotations import read_annotations


def compute_anchors(
    train_file: str | Path,
    out: str | Path,
    k: int = 10,
    seed: int = 0,
    annotation_format: str = "auto",
    durations_file: str | Path | None = None,
) -> Path:
    """Cluster the duration-normalised (c, w) of every training window into ``k`` centres and write
    ``{"anchors": [[c, w], ...], "k", "seed", "source", "n_spans"}`` to ``out``."""
    records = read_annotations(train_file, annotation_format, durations_file)
    spans = normalised_spans(records)
    centres = kmeans_spans(spans, k, seed)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "anchors": centres.tolist(),
        "k": k,
        "seed": seed,
        "source": str(train_file),
        "n_spans": len(spans),
    }
    out.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leccr anchors", description=__doc__.splitlines()[0])
    parser.add_argument("train_file", help="training annotations (QVHighlights-style jsonl, Charades txt, TACoS json)")
    parser.add_argument("--out", required=True, help="json file to write the anchors to")
    parser.add_argument("--k", type=int, default=10, help="number of anchors (RGTR's num_queries)")
    parser.add_argument("--seed", type=int, default=0, help="k-means seed")
    parser.add_argument("--format", default="auto", help="annotation format: auto, qvhighlights, charades_sta, tacos")
    parser.add_argument("--durations-file", default=None, help="Charades_v1_*.csv or charades.json (Charades txt)")
    return parser


def anchors_main(argv: list[str]) -> Path:
    """Parse ``argv``, write the anchors; prints and returns the json path."""
    ns = build_parser().parse_args(argv)
    path = compute_anchors(ns.train_file, ns.out, ns.k, ns.seed, ns.format, ns.durations_file)
    print(f"wrote {path}")
    return path
