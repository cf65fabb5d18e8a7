"""RGTR anchors: k-means of the training GT spans, saved as json beside the config (spec
grounding_methods §3.2).

``python -m leccr_lightning.tools.anchors TRAIN_FILE --k 10 --out anchors.json`` (Charades-STA also needs
``--durations-file``); point ``model.init_args.anchors_file`` at the output.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from leccr_lightning.data.grounding import kmeans_spans, normalised_spans, read_annotations


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


def main(args: list[str] | None = None) -> Path:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("train_file")
    parser.add_argument("--out", required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--format", default="auto")
    parser.add_argument("--durations-file", default=None)
    ns = parser.parse_args(args)
    return compute_anchors(ns.train_file, ns.out, ns.k, ns.seed, ns.format, ns.durations_file)


if __name__ == "__main__":
    main()
