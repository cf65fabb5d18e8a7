"""``VideoTextDataModule``: a monolingual (English) text-to-video collection in the Dual Encoding layout.

Spec: itr_video_methods §1.4, §1.9. Under ``<root>/<collection>``: ``TextData/<collection>{train,val,test}.caption.txt``
(one caption per line, ``<videoid>#...#<k> <text>``), a frame BigFile ``FeatureData/<feature>/`` with its
``video2frames.txt``; ``<root>/word2vec/flickr/vec500flickr30m`` is the 500-d word2vec BigFile. Training items are
captions (one per line, shuffled, the last partial batch kept); a split's gallery is its videos in order of first
appearance in its caption file (LiJiaBei-7/rivrl:util/tag_data_provider.py:12-20). Videos longer than
``max_frames`` (64, ``VIDEO_MAX_LEN``) keep their first frames.

Text batches carry ``input_ids`` (RNN ids with ``<start>``/``<end>``, 0 = ``<pad>``), ``attention_mask`` and
``bow`` (raw counts) under the role ``source`` for training and ``query`` for evaluation; ``target`` may be listed
in ``roles`` for a CCR method trained on an English collection: it serves the same English captions. Concept tags
(``ConceptTags``) and BERT sentence features (``HDF5SentenceFeatures``) are ``extras``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np

from leccr_lightning.data.datamodule import FeatureSpec
from leccr_lightning.data.datasets import Gallery, PseudoParallelDataset, QuerySet, VisualItems
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import Extra, bind_extras
from leccr_lightning.data.features import FeatureStore, open_feature_store
from leccr_lightning.data.split_module import RetrievalDataModule
from leccr_lightning.data.video.captions import read_video_captions
from leccr_lightning.data.video.vocabulary import (
    RNN_SPECIALS,
    DualEncodingTexts,
    TextVocabulary,
    build_word_list,
    read_released_vocabulary,
    word2vec_rows,
)
from leccr_lightning.data.visualsearch import CaptionFile

TRAIN_ROLES = ("source", "target")


class VideoTextDataModule(RetrievalDataModule):
    """English text-to-video retrieval data (MSR-VTT, VATEX, TGIF in the Dual Encoding release).

    Args:
        root: the VisualSearch root; ``collection``: the collection folder under it.
        train_captions / val_captions / test_captions: caption file names under ``TextData/``.
        features: the frame feature store (a BigFile with ``video2frames``); ``split_features`` overrides it per split.
        roles: training text roles, ``source`` (and ``target``, the same captions, for CCR methods).
        extras: name -> ``Extra`` (``tags``: ``ConceptTags``; ``bert``: ``HDF5SentenceFeatures``).
        vocabulary_captions: caption file the vocabulary is counted on (None: the training captions; upstream counts
            ``<collection>.caption.txt`` when the release has it, util/vocab.py:96-98).
        vocabulary_threshold: minimum count of a vocabulary word (5, ``word_vocab_5``).
        released_vocabulary: a released ``word_vocab_5.pkl`` (bow or rnn) to check the rebuilt vocabulary against;
            read with a restricted unpickler, a different word list is an error.
        word2vec: the word2vec BigFile (relative to ``root``) that initialises the word embeddings
            (``word_embeddings``), missing words uniform(-1, 1) seeded with ``word2vec_seed``; None: no file.
        max_frames / frame_sampling: frame cap (64) and which frames a longer video keeps (``first``, upstream).
    """

    def __init__(
        self,
        root: str,
        collection: str,
        train_captions: str,
        val_captions: str,
        test_captions: str,
        features: FeatureSpec,
        split_features: dict[str, FeatureSpec] | None = None,
        roles: list[str] | None = None,
        extras: dict[str, Extra] | None = None,
        vocabulary_captions: str | None = None,
        vocabulary_threshold: int = 5,
        released_vocabulary: str | None = None,
        word2vec: str | None = None,
        word2vec_seed: int = 0,
        max_frames: int = 64,
        frame_sampling: str = "first",
        batch_size: int = 128,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        shuffle_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.root = Path(root)
        self.collection_dir = self.root / collection
        if not self.collection_dir.is_dir():
            raise FileNotFoundError(
                f"collection folder {self.collection_dir} does not exist (`leccr synth --config <experiment>.yaml` "
                "writes the synthetic collection of a tiny experiment; otherwise set data.init_args.root / collection)"
            )
        self.roles = list(roles or ["source"])
        unknown = [r for r in self.roles if r not in TRAIN_ROLES]
        if unknown or "source" not in self.roles:
            raise ValueError(f"roles {self.roles}: expected 'source' (and optionally 'target'), got unknown {unknown}")
        self._captions = {"train": train_captions, "val": val_captions, "test": test_captions}
        self.extras = dict(extras or {})

    def _path(self, relative: str, base: Path | None = None) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else (base or self.collection_dir) / path

    def captions(self, split: str) -> CaptionFile:
        """The caption file of ``split``."""
        return read_video_captions(self._path("TextData") / self._captions[split])

    @cached_property
    def vocabulary(self) -> TextVocabulary:
        """The vocabulary rebuilt from the training (or ``vocabulary_captions``) captions."""
        name = self.hparams.vocabulary_captions or self._captions["train"]
        captions = read_video_captions(self._path("TextData") / name)
        vocabulary = TextVocabulary(build_word_list(captions.texts, self.hparams.vocabulary_threshold))
        if self.hparams.released_vocabulary is not None:
            path = self._path(self.hparams.released_vocabulary)
            released = read_released_vocabulary(path)
            expected = (
                vocabulary.rnn_tokens if released[: len(RNN_SPECIALS)] == list(RNN_SPECIALS) else vocabulary.words
            )
            if released != expected:
                index = next((i for i, (a, b) in enumerate(zip(released, expected, strict=False)) if a != b), None)
                where = f"first difference at index {index}" if index is not None else "different lengths"
                raise DataFormatError(
                    path, 0, f"{len(released)} tokens, rebuilt vocabulary has {len(expected)} ({where})"
                )
        return vocabulary

    @property
    def vocab_size(self) -> int:
        """RNN vocabulary size (word embedding rows; the BoW size is this minus the four specials)."""
        return self.vocabulary.rnn_size

    @cached_property
    def word_embeddings(self) -> np.ndarray | None:
        """Initial word embeddings [vocab_size, D] from ``word2vec`` (None without a file)."""
        if self.hparams.word2vec is None:
            return None
        path = self._path(self.hparams.word2vec, self.root)
        return word2vec_rows(self.vocabulary.rnn_tokens, path, self.hparams.word2vec_seed)

    def _store(self, split: str) -> FeatureStore:
        spec = (self.hparams.split_features or {}).get(split, self.hparams.features)
        if isinstance(spec, dict):
            spec = FeatureSpec(**spec)
        return open_feature_store(
            spec.kind,
            self._path(spec.path),
            self._path(spec.ids) if spec.ids else None,
            self._path(spec.video2frames) if spec.video2frames else None,
            self.hparams.max_frames,
            self.hparams.frame_sampling,
        )

    @cached_property
    def _train_store(self) -> FeatureStore:
        return self._store("train")

    @property
    def visual_dim(self) -> int:
        """Frame feature dimension (linked into the model by the CLI)."""
        return self._train_store.dim

    @property
    def concept_dim(self) -> int | None:
        """Size of the concept-tag vocabulary of the ``ConceptTags`` extra (linked into the model by the CLI), or None
        without one."""
        from leccr_lightning.data.video.tags import ConceptTags

        tags = [extra for extra in self.extras.values() if isinstance(extra, ConceptTags)]
        return tags[0].vocabulary_size(self.collection_dir) if tags else None

    def _bind(self, level: str, split: str, ids, source) -> dict:
        return bind_extras(self.extras, level, self.collection_dir, split, ids, Path(source))

    def _build(self, split: str) -> dict:
        captions = self.captions(split)
        store = self._train_store if split == "train" else self._store(split)
        items = VisualItems(captions.unique_visual_ids(), store, captions.path)
        texts = DualEncodingTexts(self.vocabulary, captions.texts)
        rows = np.arange(len(captions))
        item_extras = self._bind("item", split, items.ids, items.source)
        caption_extras = self._bind("caption", split, captions.ids, captions.path)
        if split == "train":
            dataset = PseudoParallelDataset(
                captions,
                items,
                dict.fromkeys(self.roles, texts),
                dict.fromkeys(self.roles, rows),
                item_extras=item_extras,
                caption_extras=caption_extras,
            )
            return {"train": dataset}
        queries = QuerySet(captions, items, {"query": texts}, {"query": rows}, caption_extras)
        return {"queries": queries, "gallery": Gallery(items, item_extras=item_extras)}
