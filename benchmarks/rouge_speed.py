"""ROUGE-L relevance (the NDCG ground truth of the ITR papers) at the MSCOCO 1K and 5K test sizes.

``rouge_relevance`` of C = 5N captions against N items with 5 references each (COCO-5K: 25,000 x 5,000, i.e.
625 million caption pairs), timed once, against the goal (COCO-5K under 2 minutes on 2 cores; COCO-1K pro rata).
Captions: real Multi30K English captions recombined (``task2/raw/train.{1..5}.en.gz``, 5 independent captions per
image) when ``--multi30k`` points at the shared data, else synthetic captions of Multi30K length (12 words on
average from a Zipf vocabulary). The reference, pycocoevalcap's ``Rouge.calc_score`` fed the same tokens, is run on
``--check-queries`` queries against every item: it must give the same float32 values, and its time extrapolated to
the whole matrix shows the speed-up.

    python benchmarks/rouge_speed.py --sizes coco1k,coco5k --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
from _common import add_device_options, goal_line, setup_device

from leccr_lightning.metrics.relevance import rouge_relevance, rouge_tokens

SIZES = {"coco1k": 1_000, "coco5k": 5_000}
"""name -> items (5 captions each)."""
CAPTIONS_PER_ITEM = 5
COCO5K_GOAL_S = 120.0
"""Seconds for COCO-5K on 2 cores (issue 13); other sizes get the same time per caption pair."""
DEFAULT_MULTI30K = Path(__file__).resolve().parents[2] / "shared" / "data" / "multi30k"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="coco1k,coco5k", help=f"comma-separated, from {sorted(SIZES)}")
    parser.add_argument("--multi30k", type=Path, default=DEFAULT_MULTI30K, help="the shared Multi30K folder")
    parser.add_argument("--check-queries", type=int, default=5, help="queries checked against pycocoevalcap")
    parser.add_argument("--seed", type=int, default=0)
    add_device_options(parser)
    args = parser.parse_args()
    unknown = [name for name in args.sizes.split(",") if name not in SIZES]
    if unknown:
        parser.error(f"unknown sizes {unknown}; choose from {sorted(SIZES)}")
    return args


def multi30k_captions(folder: Path, num_items: int) -> list[str] | None:
    """The 5 English captions of the first ``num_items`` Multi30K training images, item-major; None when absent."""
    raw = folder / "task2" / "raw"
    if not raw.is_dir():
        return None
    per_reference = []
    for k in range(1, CAPTIONS_PER_ITEM + 1):
        with gzip.open(raw / f"train.{k}.en.gz", "rt", encoding="utf-8") as handle:
            per_reference.append([next(handle).strip() for _ in range(num_items)])
    return [per_reference[k][i] for i in range(num_items) for k in range(CAPTIONS_PER_ITEM)]


def synthetic_captions(num_items: int, seed: int) -> list[str]:
    """Captions of 6-20 words (mean ~12, like Multi30K) drawn from a 5,000-word Zipf vocabulary."""
    rng = np.random.default_rng(seed)
    count = num_items * CAPTIONS_PER_ITEM
    lengths = rng.integers(6, 19, size=count)
    words = np.minimum(rng.zipf(1.3, size=int(lengths.sum())), 5_000)
    return [" ".join(f"w{w}" for w in chunk) for chunk in np.split(words, np.cumsum(lengths)[:-1])]


def pycocoevalcap_rows(texts: list[str], items: np.ndarray, num_items: int, rows: range) -> np.ndarray:
    """``Rouge.calc_score`` of the captions ``rows`` against every item's references (same tokens, space-joined)."""
    from pycocoevalcap.rouge.rouge import Rouge

    scorer = Rouge()
    tokens = [" ".join(rouge_tokens(text)) for text in texts]
    references = [[] for _ in range(num_items)]
    for caption, item in zip(tokens, items, strict=True):
        references[item].append(caption)
    return np.array([[scorer.calc_score([tokens[q]], refs) for refs in references] for q in rows], dtype=np.float32)


def main() -> None:
    args = parse_args()
    setup_device(args)
    for name in args.sizes.split(","):
        num_items = SIZES[name]
        texts = multi30k_captions(args.multi30k, num_items)
        source = "Multi30K train captions" if texts is not None else "synthetic captions"
        texts = texts if texts is not None else synthetic_captions(num_items, args.seed)
        items = np.arange(len(texts)) // CAPTIONS_PER_ITEM
        pairs = len(texts) * len(texts)
        start = time.perf_counter()
        relevance = rouge_relevance(texts, items, num_items, workers=args.threads)
        seconds = time.perf_counter() - start
        rows = range(args.check_queries)
        start = time.perf_counter()
        reference = pycocoevalcap_rows(texts, items, num_items, rows)
        reference_seconds = (time.perf_counter() - start) * len(texts) / len(rows)
        mismatches = int((reference != relevance[: len(rows)]).sum())
        mean_words = np.mean([len(rouge_tokens(text)) for text in texts])
        print(
            f"{name}: {len(texts)} captions x {num_items} items ({source}, {mean_words:.1f} words on average, "
            f"{pairs / 1e6:.0f} M caption pairs) | {seconds:.1f} s | pycocoevalcap extrapolated "
            f"{reference_seconds / 3600:.2f} h ({reference_seconds / seconds:.0f}x slower), "
            f"{mismatches} of {reference.size} checked values differ"
        )
        goal = COCO5K_GOAL_S * pairs / (SIZES["coco5k"] * CAPTIONS_PER_ITEM) ** 2
        print("  " + goal_line(f"{name} ROUGE-L relevance seconds", seconds, goal, " s"))


if __name__ == "__main__":
    main()
