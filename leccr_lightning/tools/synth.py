"""``leccr synth``: write a synthetic collection (retrieval, in the VisualSearch layout; or grounding).

Retrieval options are the fields of ``SynthConfig`` (``--languages de fr``, ``--layout multi30k``, ``--video true``,
``--mt_noise 0.4``, ``--n_train``, ``--concepts_per_item 2 4``...); ``--layout`` picks the file names (``synthetic``
or a real collection's; the English video collections of RIVRL / Dual Encoding: ``synthvideo``, ``msrvtt10k``,
``msrvtt10kyu``, ``msrvtt10kmiech``, ``vatex_en``, ``tgif_li``, ``tgif_chen``, with concept tags, word2vec and caption
features). ``--config EXPERIMENT`` writes the collection that experiment reads, where its data config says (task,
root, layout, language, videos, images, region and frame extras follow from the config; other options still apply),
unless it is already there.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, fields
from pathlib import Path

from jsonargparse import ArgumentParser

from leccr_lightning.data.layouts import LAYOUTS
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection
from leccr_lightning.data.visualsearch import TARGET_LANGUAGES

FIELD_HELP = {
    "languages": f"target languages, one or more of {' '.join(TARGET_LANGUAGES)} (e.g. --languages de fr)",
    "layout": f"file names of the collection: one of {', '.join(LAYOUTS)}",
    "video": "write frame sequences (video2frames.txt) instead of one feature per image",
    "n_train": "number of training visual items",
    "n_val": "number of validation visual items",
    "n_test": "number of test visual items",
    "n_concepts": "number of latent concepts (each an English noun with a feature prototype)",
    "concepts_per_item": "least and most concepts in one visual item (two integers)",
    "captions_per_item": "least and most captions of one visual item (two integers)",
    "feature_dim": "dimension of the visual features",
    "feature_noise": "standard deviation of the Gaussian noise added to every feature",
    "frames": "least and most frames of one video (two integers)",
    "mt_noise": "fraction of training translations that are corrupted (their ids go to MANIFEST.json)",
    "noisy_word_rate": "word replace/drop rate inside a corrupted translation",
    "mt_word_noise": "word replace/drop rate inside every other translation",
    "back_word_noise": "word replace/drop rate of the back-translations",
    "write_images": "also render every image item as images/<visual_id>.png",
    "image_size": "side of the rendered pictures in pixels",
    "image_noise": "standard deviation of the pixel noise of the rendered pictures",
    "regions": "also write per-video region features [frames, regions, D] (ViSERN) under FeatureData/regions",
    "regions_per_frame": "region boxes per frame of the region features",
    "region_absent": "fraction of region slots left empty (masked) in the region features",
    "frame_tokens": "also write cached per-frame CLIP-style tokens (ProTA) under FeatureData/clip_frame_tokens",
    "frame_images": "also render every video's frames as images (ProTA end to end)",
    "word_dim": "width of the word2vec BigFile of the English video layouts (Dual Encoding: 500)",
    "sentence_dim": "width of the BERT-like caption features of the English video layouts (1024)",
    "tag_vocabulary_size": "most concept tags mined for the English video layouts (the official top 512)",
    "seed": "random seed (the same seed writes the same collection)",
}


def _add_config_arguments(parser: ArgumentParser) -> None:
    """One option per ``SynthConfig`` field; lists take one or more values, pairs take two."""
    for spec in fields(SynthConfig):
        default = spec.default_factory() if spec.default is MISSING else spec.default
        option, help_text = f"--{spec.name}", FIELD_HELP[spec.name]
        if spec.name == "languages":
            parser.add_argument(option, nargs="+", choices=TARGET_LANGUAGES, default=default, help=help_text)
        elif isinstance(default, tuple):
            parser.add_argument(
                option, nargs=len(default), type=type(default[0]), default=list(default), help=help_text
            )
        else:
            parser.add_argument(option, type=type(default), default=default, help=help_text)


def synth_config(cfg) -> SynthConfig:
    """The ``SynthConfig`` of parsed options (pairs back to tuples)."""
    values = {}
    for spec in fields(SynthConfig):
        value = cfg[spec.name]
        values[spec.name] = tuple(value) if isinstance(spec.default, tuple) else value
    return SynthConfig(**values)


def _class_name(spec) -> str:
    return str(spec.get("class_path", "")).rsplit(".", 1)[-1] if isinstance(spec, dict) else ""


def collection_for_experiment(config: str | Path, root: str | Path | None = None) -> tuple[str, Path, dict]:
    """What an experiment config reads: (``retrieval`` or ``grounding``, its data root (``root`` overrides it), the
    ``SynthConfig`` fields its data config implies)."""
    import contextlib
    import io

    import yaml

    from leccr_lightning.cli import lightning_main

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.suppress(SystemExit):
        lightning_main(["fit", "--config", str(config), "--print_config"])
    data = (yaml.safe_load(printed.getvalue()) or {}).get("data") or {}
    name, args = _class_name(data), data.get("init_args", {})
    root = Path(root if root is not None else args.get("root", ""))
    if name == "GroundingDataModule":
        return "grounding", root, {}
    if name == "VideoTextDataModule":  # an English video collection (Dual Encoding layout); several captions a video
        return (
            "retrieval",
            root,
            {"layout": args.get("collection", "synthvideo"), "video": True, "captions_per_item": (3, 5)},
        )
    if name != "CCRDataModule":
        raise ValueError(f"{config}: no synthetic writer for the data module {data.get('class_path')!r}")
    features, extras = args.get("features") or {}, {_class_name(e) for e in (args.get("extras") or {}).values()}
    collection = args.get("collection", "synthetic")
    if collection != "synthetic" and collection not in LAYOUTS:
        known = sorted(LAYOUTS)
        raise ValueError(f"{config}: collection {collection!r} has no synthetic layout; expected one of {known}")
    implied = {
        "layout": collection,
        "languages": [args["language"]],
        "video": features.get("video2frames") is not None,
        "write_images": features.get("kind") == "images",
        "regions": features.get("kind") == "regions" or "RegionFeatures" in extras,
        "frame_tokens": "FrameTokens" in extras,
        "frame_images": "VideoFrames" in extras,
    }
    return "retrieval", root, implied


def write_for_experiment(config: str | Path, root: str | Path | None = None, **options) -> Path:
    """Write the collection ``config`` reads (at ``root`` when given) unless it is already there; ``options`` are
    further ``SynthConfig`` fields. Returns the collection folder."""
    task, root, implied = collection_for_experiment(config, root)
    if task == "grounding":
        from leccr_lightning.data.grounding.synthetic import write_grounding_collection

        if (root / "annotations").is_dir():
            return root
        return Path(write_grounding_collection(root, seed=options.get("seed", 0)))
    folder = root / ("synthetic" if implied["layout"] == "synthetic" else LAYOUTS[implied["layout"]].collection)
    manifest = folder / "MANIFEST.json"
    if manifest.is_file():
        written = json.loads(manifest.read_text(encoding="utf-8"))["config"]
        wanted = {k: list(v) if isinstance(v, tuple) else v for k, v in implied.items()}
        differ = {k: (written.get(k, False), v) for k, v in wanted.items() if written.get(k, False) != v}
        if differ:
            raise ValueError(
                f"{folder} holds a synthetic collection written with { ({k: w for k, (w, _) in differ.items()}) }, but "
                f"{config} reads one with { ({k: v for k, (_, v) in differ.items()}) }: remove it, or write to another "
                "root with --out and pass it as --data.init_args.root"
            )
        return folder
    return Path(write_synthetic_collection(root, SynthConfig(**{**options, **implied})))


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr synth", description=__doc__)
    parser.add_argument("--out", default=None, help="output root (the VisualSearch root of the collection)")
    parser.add_argument(
        "--config", default=None, help="an experiment config: write the collection it reads (at --out if given)"
    )
    parser.add_argument(
        "--task", choices=["retrieval", "grounding"], default="retrieval", help="kind of collection to write"
    )
    _add_config_arguments(parser)
    return parser


def synth_main(argv: list[str]) -> str:
    """Parse ``argv`` and write the collection; prints and returns its folder."""
    cfg = build_parser().parse_args(argv)
    if cfg.config is not None:
        options = {f.name: v for f, v in zip(fields(SynthConfig), synth_config(cfg).__dict__.values(), strict=True)}
        folder = write_for_experiment(cfg.config, cfg.out, **options)
        print(f"collection of {cfg.config}: {folder}")
        return str(folder)
    if cfg.out is None:
        raise ValueError("leccr synth needs --out (where to write) or --config (an experiment to write data for)")
    if cfg.task == "grounding":
        from leccr_lightning.data.grounding.synthetic import write_grounding_collection

        folder = write_grounding_collection(cfg.out, seed=cfg.seed)
    else:
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {cfg.layout!r}; expected one of {sorted(LAYOUTS)}")
        folder = write_synthetic_collection(cfg.out, synth_config(cfg))
    print(f"wrote {folder}")
    return str(folder)
