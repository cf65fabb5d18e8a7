"""Train tiny experiments over seeds on shared synthetic collections, then compare them with ``leccr report``.

Each run is ``leccr fit --config <experiment> --test_after_fit true`` (the config's epochs unless ``--epochs``, one
run per seed) with ``RankWriter`` and ``ConfidenceWriter``, on a collection written by ``leccr synth`` for each MT
noise rate; the runs stay in ``--runs`` and ``leccr report`` compares them (mean ± std table and plots in
``--runs/report``). E.g.

    python experiments/compare_tiny.py --experiments baseline nrccr cl2cm dcot --mt_noise 0.0 0.4 --seeds 0 1 2
    python experiments/compare_tiny.py --experiments unified bcls listwise rvsepp/tiny_baseline --ndcg \
        --metrics t2v_r1 t2v_r5 t2v_r10 v2t_r1 v2t_r5 v2t_r10 sumr t2v_ndcg@25 v2t_ndcg@25

``--text multi30k`` writes semi-real collections instead (``data/semireal.py``: real Multi30K task-1 English and German
caption text, MT corruption at each noise rate, features tied to the English content words; ``--multi30k`` points at
the Multi30K folder, ``../shared/data/multi30k`` by default), where the synthetic collection's word-by-word
"translations" flatter MT-heavy methods:

    python experiments/compare_tiny.py --text multi30k --experiments baseline nrccr cl2cm dcot leccr --mt_noise 0 0.4

``--ndcg`` adds TERAN-style NDCG@25 at test time: ROUGE-L relevance of every test query against the captions of
every gallery item (itr spec §9.3), precomputed per collection and passed as ``model.init_args.eval_relevance``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

from leccr_lightning.cli import lightning_main
from leccr_lightning.data.semireal import SemiRealConfig, write_semireal_collection
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list
from leccr_lightning.metrics.relevance import rouge_relevance, save_relevance
from leccr_lightning.tools.report import report_main

WRITERS = [
    "--trainer.callbacks+=leccr_lightning.callbacks.ranks.RankWriter",
    "--trainer.callbacks+=leccr_lightning.callbacks.ranks.ConfidenceWriter",
]


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


def fit_and_test(config: Path, root: Path, out: Path, epochs: int | None, seed: int, extra: list[str]) -> None:
    """One ``leccr fit --test_after_fit true`` run into a fresh ``out`` (``epochs``: None keeps the config's)."""
    shutil.rmtree(out, ignore_errors=True)
    if epochs is not None:
        extra = ["--trainer.max_epochs", str(epochs), *extra]
    lightning_main(
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
            "--seed_everything",
            str(seed),
            "--test_after_fit",
            "true",
            *WRITERS,
            *extra,
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["baseline", "nrccr", "cl2cm", "dcot", "leccr"])
    parser.add_argument("--mt_noise", nargs="+", type=float, default=[0.0], help="one collection per MT noise rate")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0], help="seed_everything of the runs")
    parser.add_argument("--metrics", nargs="+", default=None, help="table columns (default: leccr report's)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of every run (default: the config's)")
    parser.add_argument("--synth_seed", type=int, default=0, help="seed of the synthetic collections")
    parser.add_argument("--n_train", type=int, default=300, help="training items of the synthetic collections")
    parser.add_argument("--ndcg", action="store_true", help="add ROUGE-L NDCG@25 at test time")
    parser.add_argument("--text", choices=["synthetic", "multi30k"], default="synthetic", help="caption text source")
    parser.add_argument("--multi30k", default="../shared/data/multi30k", help="Multi30K folder of --text multi30k")
    parser.add_argument("--runs", default="runs/compare_tiny", help="folder of the collections, runs and report")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    base = Path(args.runs)
    outs = []
    for noise in args.mt_noise:
        root = base / "data" / f"noise{noise:g}"
        shutil.rmtree(root, ignore_errors=True)
        if args.text == "multi30k":
            config = SemiRealConfig(mt_noise=noise, seed=args.synth_seed, n_train=args.n_train)
            collection = write_semireal_collection(args.multi30k, root, config)
        else:
            config = SynthConfig(mt_noise=noise, seed=args.synth_seed, n_train=args.n_train)
            collection = write_synthetic_collection(root, config)
        extra = []
        if args.ndcg:
            extra = ["--model.init_args.eval_relevance", test_rouge_relevance(collection, root / "rouge.npy")]
        for name in args.experiments:
            for seed in args.seeds:
                out = base / "runs" / f"{name.replace('/', '_')}-noise{noise:g}-seed{seed}"
                fit_and_test(experiment_path(name), root, out, args.epochs, seed, extra)
                outs.append(str(out))
    metrics = ["--metrics", *args.metrics] if args.metrics else []
    report_main([*outs, "--out", str(base / "report"), *metrics])


if __name__ == "__main__":
    main()
