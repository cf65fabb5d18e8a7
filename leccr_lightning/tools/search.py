"""``leccr search``: query a ``leccr index`` with your own sentences (or with an embedded item) and print the top-k.

``leccr search --checkpoint run.ckpt --index idx "ein Hund läuft"`` encodes the sentence with the checkpoint's text
side (its tokenizer and caption normalisation are stored in the checkpoint, so nothing else is needed) and prints the
top-k ids and scores. ``--queries FILE`` takes one sentence per line. What is searched depends on the index: an index
of ``gallery`` vectors gives text-to-visual search, an index of ``queries`` (caption) vectors text-to-text search;
``--item ID --embeddings VIEW`` queries with an embedded vector instead (an item of ``leccr embed``'s gallery:
visual-to-text against a caption index). Without ``--checkpoint`` the index's own checkpoint is used.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser

from leccr_lightning.data.text import TokenizedTexts, normalize_caption, tokenizer_from_state
from leccr_lightning.tools.embed import load_method, read_checkpoint, read_embeddings
from leccr_lightning.tools.index import load_index


class TextEncoder:
    """The text side of a checkpoint: its tokenizer and caption normalisation (from the checkpoint) and the method's
    ``encode_queries``."""

    def __init__(self, checkpoint_path: str | Path, device: str = "cpu"):
        checkpoint = read_checkpoint(checkpoint_path)
        data = checkpoint.get("datamodule_hyper_parameters", {})
        class_path = data.get("_class_path", "")
        state = checkpoint.get(class_path.rsplit(".", 1)[-1], {})
        if "tokenizer" in state:
            self.tokenizer = tokenizer_from_state(state["tokenizer"])
        elif data.get("tokenizer", "train") != "train":
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(data["tokenizer"], local_files_only=True)
        else:
            raise ValueError(
                f"checkpoint {checkpoint_path} holds no tokenizer: it was written before the DataModule saved its "
                "trained tokenizer in checkpoints; train it again"
            )
        self.policy = data.get("normalization", "none")
        self.max_words = data.get("max_words", 30)
        self.max_length = data.get("max_length", 64)
        self.model = load_method(checkpoint_path, device)
        self.device = device

    def encode(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Named query views [N, ...] of ``texts`` (normalised and tokenised as the training queries were)."""
        normalised = [normalize_caption(t, self.policy, "query", self.max_words) for t in texts]
        tokens = TokenizedTexts(self.tokenizer, normalised, self.max_length).batch(range(len(texts)))
        batch = {
            "kind": "query",
            "position": torch.arange(len(texts)),
            "target": torch.zeros(len(texts), dtype=torch.long),
            "text": {"query": tokens},
            "caption_ids": [f"query#{i}" for i in range(len(texts))],
        }
        batch = self.model.transfer_batch_to_device(batch, torch.device(self.device), 0)
        with torch.inference_mode():
            return {name: view.float().cpu() for name, view in self.model.encode_queries(batch).items()}


def read_queries(path: str | Path) -> list[str]:
    """The non-empty lines of a UTF-8 file of queries."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"query file {path} does not exist")
    queries = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not queries:
        raise ValueError(f"query file {path} holds no query")
    return queries


def item_vector(view: str | Path, item: str) -> np.ndarray:
    """The embedding [1, D] of ``item`` in a view written by ``leccr embed``."""
    ids, matrix = read_embeddings(view)
    if item not in ids:
        raise KeyError(f"{item!r} is not an id of {view} ({len(ids)} ids, e.g. {ids[:3]})")
    return matrix[ids.index(item)][None]


def search(index, ids: list[str], vectors: np.ndarray, top_k: int) -> list[list[tuple[str, float]]]:
    """(id, inner product) of the ``top_k`` best indexed vectors of every query vector."""
    k = min(top_k, len(ids))
    scores, rows = index.search(np.ascontiguousarray(vectors, dtype=np.float32), k)
    return [
        [(ids[r], float(s)) for r, s in zip(row, score, strict=True) if r >= 0]
        for row, score in zip(rows, scores, strict=True)
    ]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr search", description=__doc__)
    parser.add_argument("texts", nargs="*", default=[], help="query sentences (quote each one)")
    parser.add_argument("--index", required=True, help="folder written by leccr index")
    parser.add_argument("--checkpoint", default=None, help="checkpoint whose text side encodes the queries")
    parser.add_argument("--queries", default=None, help="file of query sentences, one per line")
    parser.add_argument("--item", default=None, help="query with this embedded item instead of text")
    parser.add_argument("--embeddings", default=None, help="the leccr embed view holding --item")
    parser.add_argument("--query_view", default="query", help="the encode_queries view matched against the index")
    parser.add_argument("--top_k", type=int, default=10, help="number of results per query")
    parser.add_argument("--json", action="store_true", help="print one JSON line per query instead of a table")
    parser.add_argument("--device", default="cpu", help="torch device of the text encoder")
    return parser


def search_main(argv: list[str]) -> list[dict]:
    """Parse ``argv``, run every query and print the results; returns them (query, direction, results)."""
    cfg = build_parser().parse_args(argv)
    index, ids, meta = load_index(cfg.index)
    target = "visual" if meta["role"] == "gallery" else "text"
    if cfg.item is not None:
        if cfg.embeddings is None:
            raise ValueError("--item needs --embeddings, the leccr embed view that holds it")
        queries, vectors = [cfg.item], item_vector(cfg.embeddings, cfg.item)
        source = "visual" if Path(cfg.embeddings).parent.name == "gallery" else "text"
    else:
        queries = list(cfg.texts) + (read_queries(cfg.queries) if cfg.queries else [])
        if not queries:
            raise ValueError("give query sentences, --queries FILE, or --item ID --embeddings VIEW")
        checkpoint = cfg.checkpoint or meta.get("checkpoint")
        if checkpoint is None:
            raise ValueError(f"--checkpoint is needed: the index {cfg.index} records none")
        views = TextEncoder(checkpoint, cfg.device).encode(queries)
        if cfg.query_view not in views:
            raise ValueError(f"the method has no query view {cfg.query_view!r}; its views: {sorted(views)}")
        vectors, source = views[cfg.query_view].numpy(), "text"
    if vectors.shape[1] != meta["dim"]:
        raise ValueError(f"query vectors have dimension {vectors.shape[1]}, the index {cfg.index} holds {meta['dim']}")
    direction = f"{source}-to-{target}"
    results = [
        {"query": query, "direction": direction, "results": [{"id": i, "score": s} for i, s in hits]}
        for query, hits in zip(queries, search(index, ids, vectors, cfg.top_k), strict=True)
    ]
    for result in results:
        if cfg.json:
            print(json.dumps(result, ensure_ascii=False))
            continue
        print(f"{result['query']}  ({direction}, {meta['role']}/{meta['view']})")
        for rank, hit in enumerate(result["results"], start=1):
            print(f"  {rank:>3}  {hit['id']:<32} {hit['score']:.4f}")
    return results
