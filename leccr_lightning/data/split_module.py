"""What every retrieval DataModule shares: splits built once and cached, and the loaders of the batch contract.

A subclass builds a split's datasets in ``_build(split)``: ``{"train": PseudoParallelDataset}`` for training, and
``{"queries": QuerySet, "gallery": Gallery}`` for val/test. Training batches follow an ``EpochShuffleSampler`` (so a
resumed run sees the same batches); evaluation returns two loaders, queries then gallery. Its hyper-parameters must
include ``batch_size``, ``eval_batch_size``, ``num_workers`` and ``shuffle_seed`` (``drop_last`` optionally).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import lightning as L
from torch.utils.data import DataLoader

from leccr_lightning.data.datasets import EpochShuffleSampler

SPLITS = ("train", "val", "test")
STAGE_SPLITS = {"fit": ("train", "val"), "validate": ("val",), "test": ("test",), "predict": ("test",)}


class RetrievalDataModule(L.LightningDataModule, ABC):
    """Caching of split datasets and the train / val / test / predict loaders."""

    def __init__(self) -> None:
        super().__init__()
        self._splits: dict[str, dict] = {}

    @abstractmethod
    def _build(self, split: str) -> dict:
        """The datasets of ``split`` (see the module docstring)."""

    def split(self, split: str) -> dict:
        """The datasets of a split, built (and tokenised) once and cached."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
        if split not in self._splits:
            self._splits[split] = self._build(split)
        return self._splits[split]

    def setup(self, stage: str) -> None:
        for split in STAGE_SPLITS[stage]:
            self.split(split)

    def _loader(self, dataset, batch_size: int, train: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=self._train_sampler(len(dataset)) if train else None,
            collate_fn=dataset.collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            drop_last=train and bool(self.hparams.get("drop_last", False)),
        )

    def _train_sampler(self, size: int) -> EpochShuffleSampler:
        """The epoch permutation, split over the trainer's processes (one process without a trainer)."""
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        return EpochShuffleSampler(size, self.hparams.shuffle_seed, replicas, rank)

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        datasets = self.split(split)
        size = self.hparams.eval_batch_size
        return [self._loader(datasets["queries"], size, False), self._loader(datasets["gallery"], size, False)]

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.split("train")["train"], self.hparams.batch_size, True)

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")
