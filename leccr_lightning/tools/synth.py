"""``leccr synth``: write a synthetic collection (retrieval, in the VisualSearch layout; or grounding).

Retrieval options are the fields of ``SynthConfig`` (``--languages de fr``, ``--layout multi30k``, ``--video true``,
``--mt_noise 0.4``, ``--n_train``, ``--concepts_per_item 2 4``...); ``--layout`` picks the file names (``synthetic``
or a real collection's).
"""

from __future__ import annotations

from dataclasses import MISSING, fields

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


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr synth", description=__doc__)
    parser.add_argument("--out", required=True, help="output root (the VisualSearch root of the collection)")
    parser.add_argument(
        "--task", choices=["retrieval", "grounding"], default="retrieval", help="kind of collection to write"
    )
    _add_config_arguments(parser)
    return parser


def synth_main(argv: list[str]) -> str:
    """Parse ``argv`` and write the collection; prints and returns its folder."""
    cfg = build_parser().parse_args(argv)
    if cfg.task == "grounding":
        from leccr_lightning.data.grounding_synthetic import write_grounding_collection

        folder = write_grounding_collection(cfg.out, seed=cfg.seed)
    else:
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {cfg.layout!r}; expected one of {sorted(LAYOUTS)}")
        folder = write_synthetic_collection(cfg.out, synth_config(cfg))
    print(f"wrote {folder}")
    return str(folder)
