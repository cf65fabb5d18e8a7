"""The grounding DataModule: train/val/test/predict splits of QVHighlights, Charades-STA or TACoS (spec §5).

Queries come as precomputed token features (one file per query, ``qid{qid}.npz``, key ``last_hidden_state``), as
query text tokenised for a Hugging Face text encoder in the model (``tokenizer``), or both. The random training
targets are drawn per epoch in ``on_before_batch_transfer`` (``saliency.draw_training_targets``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from leccr_lightning.data.grounding.annotations import GroundingRecord, read_annotations
from leccr_lightning.data.grounding.dataset import GroundingDataset, collate_grounding
from leccr_lightning.data.grounding.features import ClipFeatures, QueryFeatures
from leccr_lightning.data.grounding.saliency import draw_training_targets
from leccr_lightning.data.text import TokenizedTexts, load_or_train_tokenizer


class GroundingDataModule(L.LightningDataModule):
    """Train/val/test/predict splits of a grounding collection (QVHighlights layout, Charades-STA, TACoS).

    Relative paths resolve against ``root``. ``visual_dim``/``text_dim`` are read from one feature file each,
    so the CLI can link them to the model right after ``__init__``. Charades-STA has no val split: point
    ``val_file`` at the test file to follow the upstream protocol (§2.4, selection on test), and say so.

    Queries: ``text_feature_dir`` serves precomputed token features (``batch["text"]``; ``None`` turns them
    off); ``tokenizer`` serves the query text tokenised once per split (``batch["tokens"]``, at most
    ``max_q_l`` tokens with the special ones) for a text encoder in the model: ``"train"`` is a WordPiece of
    ``tokenizer_vocab_size`` trained on the training queries and cached in ``<root>/cache`` (shared by every
    later run), or a local tokenizer directory. ``vocab_size`` is then linked into the model.

    Targets: ``span_normaliser`` divides the GT windows by the annotated duration (``"duration"``, the default:
    inference multiplies by it) or by the feature length n_clips * clip_len (``"features"``, the official
    normaliser, start_end_dataset.py:164). ``window_clips_from`` counts the clips of a window-only annotation
    (Charades-STA, TACoS) with ``clip_len`` (QD-DETR) or with duration / n_clips (``"duration"``, CG-DETR). In
    training each query keeps ``max_windows`` randomly chosen windows and gets its hinge pairs from a generator
    seeded by (``saliency_seed``, epoch, query index); ``saliency_seed=None`` takes the run's ``seed_everything``
    seed (``PL_GLOBAL_SEED``), so a resumed run draws what an uninterrupted one does.
    """

    def __init__(
        self,
        root: str = ".",
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        predict_file: str | None = None,
        annotation_format: str = "auto",
        durations_file: str | list[str] | None = None,
        video_feature_dirs: Sequence[str] = ("features/video",),
        video_feature_key: str = "features",
        text_feature_dir: str | None = "features/text",
        text_feature_key: str = "last_hidden_state",
        text_file_template: str = "qid{qid}",
        clip_len: float = 2.0,
        max_v_l: int = 75,
        max_q_l: int = 32,
        use_tef: bool = True,
        normalize_video: bool = True,
        normalize_text: bool = True,
        tokenizer: str | None = None,
        tokenizer_vocab_size: int = 2000,
        max_windows: int = 5,
        span_normaliser: str = "duration",
        window_clips_from: str = "clip_len",
        saliency_seed: int | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"grounding data folder {self.root} does not exist (`leccr synth --config <experiment>.yaml` writes "
                "the synthetic collection a tiny experiment reads; otherwise set data.init_args.root)"
            )
        self.files = {
            "fit": train_file,
            "validate": val_file,
            "test": test_file,
            "predict": predict_file or test_file,
        }
        self.video = ClipFeatures(
            [self.root / d for d in video_feature_dirs], video_feature_key, max_v_l, normalize_video, use_tef
        )
        if text_feature_dir is None and tokenizer is None:
            raise ValueError(
                "the queries need data.init_args.text_feature_dir (precomputed token features) or "
                "data.init_args.tokenizer ('train' or a local tokenizer directory), or both"
            )
        if tokenizer == "train" and train_file is None:
            raise ValueError("tokenizer 'train' learns its vocabulary from the training queries: set train_file")
        self.text: QueryFeatures | None = None
        if text_feature_dir is not None:
            folder = self.root / text_feature_dir
            self.text = QueryFeatures(folder, text_feature_key, text_file_template, max_q_l, normalize_text)
        self.datasets: dict[str, GroundingDataset] = {}
        self._records: dict[str, list[GroundingRecord]] = {}

    @property
    def visual_dim(self) -> int:
        """Width of a video feature row (all folders + TEF)."""
        return self.video.dim

    @property
    def text_dim(self) -> int | None:
        """Width of a query token feature row (``None`` without precomputed text features)."""
        return None if self.text is None else self.text.dim

    @cached_property
    def tokenizer(self):
        """The query tokenizer (``None`` unless ``tokenizer`` is set): trained once on the training queries and
        cached, or loaded from a local directory."""
        spec = self.hparams.tokenizer
        if spec is None:
            return None
        corpus = [r.query for r in self.records("fit")] if spec == "train" else []
        return load_or_train_tokenizer(spec, corpus, self.root / "cache", self.hparams.tokenizer_vocab_size)

    @property
    def vocab_size(self) -> int | None:
        """Tokenizer vocabulary size, linked into the model's text encoder (``None`` without a tokenizer)."""
        return None if self.tokenizer is None else len(self.tokenizer)

    def records(self, split: str) -> list[GroundingRecord]:
        """The annotation records of ``split`` in {fit, validate, test, predict}, read once."""
        if split not in self._records:
            name = self.files[split]
            if name is None:
                raise ValueError(f"no annotation file configured for the {split!r} split")
            hp = self.hparams
            self._records[split] = read_annotations(self.root / name, hp.annotation_format, self._durations())
        return self._records[split]

    def dataset(self, split: str) -> GroundingDataset:
        """The dataset of ``split``, built once (queries tokenised once when a tokenizer is set)."""
        if split not in self.datasets:
            hp, records = self.hparams, self.records(split)
            tokens = None
            if self.tokenizer is not None:
                tokens = TokenizedTexts(self.tokenizer, [r.query for r in records], hp.max_q_l)
            self.datasets[split] = GroundingDataset(
                records,
                self.video,
                self.text,
                hp.clip_len,
                tokens=tokens,
                span_normaliser=hp.span_normaliser,
                window_clips_from=hp.window_clips_from,
            )
        return self.datasets[split]

    @property
    def sampling_seed(self) -> int:
        """Seed of the per-epoch training draws: ``saliency_seed``, else the run's ``seed_everything`` seed."""
        seed = self.hparams.saliency_seed
        return int(os.environ.get("PL_GLOBAL_SEED", 0)) if seed is None else seed

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """In training, draw the batch's random targets for the current epoch (window subset, hinge pairs)."""
        trainer = self.trainer
        if trainer is not None and trainer.training:
            return draw_training_targets(batch, self.sampling_seed, trainer.current_epoch, self.hparams.max_windows)
        return batch

    def _durations(self) -> list[Path] | None:
        files = self.hparams.durations_file
        if files is None:
            return None
        return [self.root / f for f in ([files] if isinstance(files, str) else files)]

    def setup(self, stage: str) -> None:
        wanted = {
            "fit": ["fit", "validate"],
            "validate": ["validate"],
            "test": ["test"],
            "predict": ["predict"],
        }
        for split in wanted[stage]:
            if self.files[split] is not None:
                self.dataset(split)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        size = self.hparams.batch_size if shuffle else self.hparams.eval_batch_size or self.hparams.batch_size
        dataset = self.dataset(split)
        return DataLoader(
            dataset,
            batch_size=size,
            shuffle=shuffle,
            num_workers=self.hparams.num_workers,
            collate_fn=partial(collate_grounding, tokens=dataset.tokens),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("fit", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validate", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("predict", shuffle=False)
