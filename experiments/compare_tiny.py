"""Train and test several tiny experiments on the same synthetic collections and print one table.

Each run is ``leccr fit --config <experiment> --test_after_fit true`` (same seed and epochs for all) on a collection
written by ``leccr synth`` with the given MT noise rates; the table lists the chosen ``test/`` keys. Used for the
comparisons quoted in the README, e.g.

    python experiments/compare_tiny.py --experiments baseline nrccr cl2cm dcot --mt_noise 0.0 0.4
    python experiments/compare_tiny.py --experiments unified bcls listwise rvsepp/tiny_baseline --ndcg \
        --keys t2v_r1 t2v_r5 t2v_r10 v2t_r1 v2t_r5 v2t_r10 sumr t2v_ndcg@25 v2t_ndcg@25

``--ndcg`` adds TERAN-style NDCG@25 at test time: ROUGE-L relevance of every test query against the captions of
every gallery item (itr spec §9.3), precomputed per collection and passed as ``model.init_args.eval_relevance``.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list
from leccr_lightning.metrics.relevance import rouge_relevance, save_relevance


def experiment_path(name: str) -> Path:
    """``nrccr`` -> configs/experiments/nrccr/tiny.yaml; ``rvsepp/tiny_baseline`` -> that file."""
    return Path("configs/experiments") / (f"{name}.yaml" if "/" in name else f"{name}/tiny.yaml")


def test_rouge_relevance(collection: Path, out: Path) -> str:
    """ROUGE-L relevance [test queries, test gallery] of the synthetic German test split, saved as .npy; returns
    the ``eval_relevance`` argument."""
    queries = read_caption_file(collection / "TextData" / "synthtest_de.caption.txt")
    gallery = {visual_id: i for i, visual_id in enumerate(read_id_list(collection / "FeatureData" / "test_id.txt"))}
    targets = [gallery[visual_id] for visual_id in queries.visual_ids]
    save_relevance(out, rouge_relevance(queries.texts, targets, len(gallery)))
    provider = {"class_path": "leccr_lightning.metrics.relevance.PrecomputedRelevance", "init_args": {"path": str(out)}}
    return json.dumps({"test": provider})


def run(config: Path, root: Path, out: Path, epochs: int, seed: int, extra: list[str]) -> dict[str, float]:
    cli = lightning_main(
        [
            "fit",
            "--config",
            str(config),
            "--data.init_args.root",
            str(root),
            "--trainer.default_root_dir",
            str(out),
            "--trainer.logger.init_args.save_dir",
            str(out),
            "--trainer.max_epochs",
            str(epochs),
            "--seed_everything",
            str(seed),
            "--test_after_fit",
            "true",
            *extra,
        ]
    )
    return json.loads(Path(cli.trainer.log_dir, "test_metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["baseline", "nrccr", "cl2cm", "dcot", "leccr"])
    parser.add_argument("--mt_noise", nargs="+", type=float, default=[0.0])
    parser.add_argument("--keys", nargs="+", default=["t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "sumr"])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--synth_seed", type=int, default=0)
    parser.add_argument("--ndcg", action="store_true", help="add ROUGE-L NDCG@25 at test time")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for noise in args.mt_noise:
            root = Path(tmp) / f"noise{noise}"
            collection = write_synthetic_collection(root, SynthConfig(mt_noise=noise, seed=args.synth_seed))
            extra = []
            if args.ndcg:
                extra = ["--model.init_args.eval_relevance", test_rouge_relevance(collection, root / "rouge.npy")]
            for name in args.experiments:
                metrics = run(
                    experiment_path(name),
                    root,
                    Path(tmp) / "runs" / f"{name.replace('/', '_')}-{noise}",
                    args.epochs,
                    args.seed,
                    extra,
                )
                rows.append((name, noise, [metrics.get(f"test/{k}", float("nan")) for k in args.keys]))
    print("| experiment | MT noise | " + " | ".join(args.keys) + " |")
    print("|---|---|" + "---|" * len(args.keys))
    for name, noise, values in rows:
        print(f"| {name} | {noise:g} | " + " | ".join(f"{v:.1f}" for v in values) + " |")


if __name__ == "__main__":
    main()
