"""``leccr synth``: write a synthetic collection (retrieval, in the VisualSearch layout; or grounding).

Retrieval options are the fields of ``SynthConfig`` (``--languages de fr``, ``--layout multi30k``, ``--video true``,
``--mt_noise 0.4``, ``--n_train``...); ``--layout`` picks the file names (``synthetic`` or a real collection's).
"""

from __future__ import annotations

from dataclasses import fields

from jsonargparse import ArgumentParser

from leccr_lightning.data.layouts import LAYOUTS
from leccr_lightning.data.synthetic import SynthConfig, write_synthetic_collection


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr synth", description=__doc__)
    parser.add_argument("--out", required=True, help="output root (the VisualSearch root of the collection)")
    parser.add_argument("--task", choices=["retrieval", "grounding"], default="retrieval")
    parser.add_class_arguments(SynthConfig)
    return parser


def synth_main(argv: list[str]) -> str:
    """Parse ``argv`` and write the collection; prints and returns its folder."""
    cfg = build_parser().parse_args(argv)
    if cfg.task == "grounding":
        from leccr_lightning.data.grounding.synthetic import write_grounding_collection

        folder = write_grounding_collection(cfg.out, seed=cfg.seed)
    else:
        if cfg.layout not in LAYOUTS:
            raise ValueError(f"unknown layout {cfg.layout!r}; expected one of {sorted(LAYOUTS)}")
        config = SynthConfig(**{f.name: cfg[f.name] for f in fields(SynthConfig)})
        folder = write_synthetic_collection(cfg.out, config)
    print(f"wrote {folder}")
    return str(folder)
