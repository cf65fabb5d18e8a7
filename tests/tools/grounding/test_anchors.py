"""``leccr anchors`` writes RGTR's k-means anchors (spec grounding_methods §3.2) through the tool registry."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from leccr_lightning.cli import main
from leccr_lightning.data.grounding.anchors import kmeans_spans, load_anchors, normalised_spans
from leccr_lightning.data.grounding.annotations import read_qvhighlights
from leccr_lightning.data.grounding.synthetic import write_grounding_collection


def test_leccr_anchors_writes_the_kmeans_centres(tmp_path: Path, capsys) -> None:
    root = write_grounding_collection(tmp_path / "gsyn", seed=2, n_queries=(40, 4, 4))
    train = root / "annotations" / "highlight_train_release.jsonl"
    out = tmp_path / "anchors_k4.json"
    main(["anchors", str(train), "--k", "4", "--seed", "3", "--out", str(out)])
    assert f"wrote {out}" in capsys.readouterr().out
    saved = json.loads(out.read_text())
    spans = normalised_spans(read_qvhighlights(train))
    assert saved["k"] == 4 and saved["seed"] == 3 and saved["n_spans"] == len(spans) == 40
    assert np.array_equal(load_anchors(out), kmeans_spans(spans, 4, seed=3))
