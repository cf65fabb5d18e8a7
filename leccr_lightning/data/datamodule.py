"""``CCRDataModule``: the official VisualSearch layout -> pseudo-parallel training batches and eval splits.

File names come from the ``configs/data/`` presets (ccr_methods §1.2); the roles a method needs are listed in
``roles`` (``source``, ``target``, ``back``, ``description``) and only those are loaded. Validation and test return
two loaders: queries (human target-language captions, ``query`` role, plus ``translated`` for translate-test) and the
gallery of visual items; ``RetrievalMetric`` matches them by position.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from leccr_lightning.data.datasets import (
    Gallery,
    ItemDescriptionFeatures,
    PseudoParallelDataset,
    QuerySet,
    VisualItems,
    aligned_rows,
    positions_of,
)
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import Extra, bind_extras
from leccr_lightning.data.features import DescriptionFeatureStore, FeatureStore, open_feature_store
from leccr_lightning.data.images import ImageFolderStore
from leccr_lightning.data.split_module import RetrievalDataModule
from leccr_lightning.data.text import (
    TextTooLongError,
    TokenizedTexts,
    load_or_train_tokenizer,
    normalize_caption,
    tokenizer_from_state,
    tokenizer_state,
)
from leccr_lightning.data.visualsearch import CaptionFile, read_caption_file, read_id_list

TRAIN_ROLES = ("source", "target", "back", "description")
LENGTH_STAGES = ("train", "eval")
QUERY_ROLES = ("query", "translated")


@dataclass
class FeatureSpec:
    """Where a split's visual features live (paths relative to the collection folder unless absolute).

    ``kind: images`` reads raw images from the folder ``path`` (``ids``: the optional ``<id> <file>`` map, MSCOCO
    ``image_ids.txt``) with the timm preprocessing of ``image_model`` at ``image_size`` (``None``: the backbone's);
    training batches use the random-resized-crop transform with area range ``image_train_scale`` (LECCR §3.4).
    """

    path: str
    kind: str = "bigfile"
    ids: str | None = None
    video2frames: str | None = None
    image_model: str = "resnet18"
    image_size: int | None = None
    image_train_scale: tuple[float, float] = (0.5, 1.0)


@dataclass
class DescriptionFeatureSpec:
    """Precomputed MLLM description token features (``.npy`` [N, L, D] + ``ids`` list, HDF5 ``features``/``ids``, or a
    folder of ``<visual_id>.npy`` [L, D]; paths relative to the collection folder unless absolute)."""

    path: str
    ids: str | None = None


def expected_tag(role: str, language: str) -> str:
    """The caption tag of a role for target language ``xx`` (ccr_methods §1.1)."""
    return {
        "source": "enc",
        "target": f"enc2{language}",
        "back": f"enc2{language}2enc",
        "query": language,
        "translated": f"{language}2enc",
    }[role]


class CCRDataModule(RetrievalDataModule):
    """Cross-lingual cross-modal retrieval data in the NRCCR/LECCR release layout.

    Args:
        root: the VisualSearch root folder (``$HOME/VisualSearch`` in the official code).
        collection: the collection folder under ``root`` (``multi30k``, ``mscoco``, ``vatex``, ``msrvtt10kcn``...).
        language: the target language ``xx`` (de, fr, cs, ja, zh).
        train_captions / val_captions / test_captions: role -> caption file name under ``TextData/``.
        features: the feature store; ``split_features`` overrides it per split (e.g. per-split ``.npy`` files).
        id_lists: split -> id-list file (relative to the collection); without one, a split's gallery is the visual
            items of its caption file in order of first appearance (the official video convention).
        roles: training text roles to load; ``query_roles``: evaluation query roles.
        descriptions: folder of ``<visual_id>.txt`` MLLM descriptions (needed when ``description`` is a role).
        description_features: precomputed description token features served instead of the text when
            ``description`` is a role (batches then carry ``description_features`` [B, L, D] and
            ``description_mask`` [B, L]; a missing id is always an error).
        extras: name -> ``Extra``: per-item or per-caption data a method reads besides features and tokens (concept
            tags, region features, frame tokens, sentence features; ``data/extras.py``), served as
            ``batch["extras"][name]``.
        tokenizer: ``"train"`` (WordPiece trained on the training captions, cached in ``<collection>/cache``) or
            a local tokenizer directory / cached Hugging Face name.
        tokenizer_lowercase: BERT's ``do_lower_case`` (lower-case and strip accents; NRCCR: true on the cased mBERT),
            ``None``: the tokenizer's own setting (``data.text.load_or_train_tokenizer``).
        max_length: tokens kept per text ([CLS] and [SEP] included; ``None`` keeps them all): one value for every
            split, or ``{train: ..., eval: ...}`` (LECCR: ``{train: null, eval: 200}``, the official training pads
            to the longest text without truncating and evaluation truncates at 200, image_Retrieval_caption.py:47,
            58,105,132). It applies to captions and descriptions alike.
        normalization: caption normalisation policy (``none``, ``nrccr``, ``nrccr_image``, ``leccr``; ccr_methods
            §1.5); a caption the policy leaves empty is an error naming its file and id.
        max_frames: frame cap for videos (NRCCR ``VIDEO_MAX_LEN`` = 64); ``None`` reads every frame (LECCR,
            retrieval_dataset_video.py:147-151).
        drop_last: drop the last incomplete training batch (LECCR's loader does, dataset/__init__.py:191-193).
        shuffle_seed: seed of the per-epoch training permutation (see ``EpochShuffleSampler``).
    """

    def __init__(
        self,
        root: str,
        collection: str,
        language: str,
        train_captions: dict[str, str],
        val_captions: dict[str, str],
        test_captions: dict[str, str],
        features: FeatureSpec,
        split_features: dict[str, FeatureSpec] | None = None,
        id_lists: dict[str, str] | None = None,
        roles: list[str] | None = None,
        query_roles: list[str] | None = None,
        descriptions: str | None = None,
        description_features: DescriptionFeatureSpec | None = None,
        allow_missing_descriptions: bool = False,
        extras: dict[str, Extra] | None = None,
        tokenizer: str = "train",
        tokenizer_vocab_size: int = 2000,
        tokenizer_lowercase: bool | None = None,
        max_length: int | None | dict[str, int | None] = 64,
        normalization: str = "none",
        max_words: int = 30,
        max_frames: int | None = 64,
        frame_sampling: str = "first",
        batch_size: int = 128,
        drop_last: bool = False,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        shuffle_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.collection_dir = Path(root) / collection
        if not self.collection_dir.is_dir():
            raise FileNotFoundError(
                f"collection folder {self.collection_dir} does not exist (`leccr synth --config <experiment>.yaml` "
                "writes the synthetic collection of a tiny experiment; otherwise set data.init_args.root / collection)"
            )
        self.language = language
        self.roles = list(roles or ["source", "target"])
        self.query_roles = list(query_roles or ["query"])
        for role in self.roles:
            if role not in TRAIN_ROLES:
                raise ValueError(f"unknown training role {role!r}; expected one of {TRAIN_ROLES}")
            if role != "description" and role not in train_captions:
                raise ValueError(f"role {role!r} is requested but train_captions names no file for it")
        if "source" not in self.roles:
            raise ValueError("training needs the 'source' role (one item per English caption)")
        for role in self.query_roles:
            if role not in QUERY_ROLES:
                raise ValueError(f"unknown query role {role!r}; expected one of {QUERY_ROLES}")
        if "description" in self.roles and descriptions is None and description_features is None:
            raise ValueError(
                "the 'description' role needs data.init_args.descriptions (a folder of <id>.txt) or "
                "data.init_args.description_features (precomputed token features)"
            )
        if isinstance(max_length, dict) and set(max_length) != set(LENGTH_STAGES):
            raise ValueError(f"max_length: expected one value or the keys {LENGTH_STAGES}, got {sorted(max_length)}")
        self._captions = {"train": train_captions, "val": val_captions, "test": test_captions}
        self.extras = dict(extras or {})
        self.tokenizer = load_or_train_tokenizer(
            tokenizer,
            self._tokenizer_corpus(),
            self.collection_dir / "cache",
            tokenizer_vocab_size,
            tokenizer_lowercase,
        )

    def state_dict(self) -> dict:
        """The tokenizer (``data.text.tokenizer_state``), so a checkpoint encodes text without the collection or its
        cache (``leccr search``); empty for a tokenizer without a fast backend."""
        if not getattr(self.tokenizer, "is_fast", False):
            return {}
        return {"tokenizer": tokenizer_state(self.tokenizer)}

    def load_state_dict(self, state_dict: dict) -> None:
        """Adopt a checkpoint's tokenizer; splits already tokenised with a different one are built again."""
        if "tokenizer" not in state_dict:
            return
        if self.state_dict().get("tokenizer") != state_dict["tokenizer"]:
            self.tokenizer = tokenizer_from_state(state_dict["tokenizer"])
            self._splits.clear()

    def _path(self, relative: str) -> Path:
        path = Path(relative)
        return path if path.is_absolute() else self.collection_dir / path

    def _caption_file(self, split: str, role: str) -> CaptionFile:
        names = self._captions[split]
        if role not in names:
            raise ValueError(f"{split}_captions names no file for role {role!r}")
        return read_caption_file(self._path("TextData") / names[role], expected_tag(role, self.language))

    @cached_property
    def _train_files(self) -> dict[str, CaptionFile]:
        return {role: self._caption_file("train", role) for role in self.roles if role != "description"}

    def _tokenizer_corpus(self) -> list[str]:
        return [t for r, f in self._train_files.items() for t in self._normalized(f, r)]

    def _normalized(self, captions: CaptionFile, role: str) -> list[str]:
        """The captions of a file under the normalisation policy (a caption it empties: error naming file and id)."""
        texts = []
        for cap_id, text in zip(captions.ids, captions.texts, strict=True):
            try:
                texts.append(normalize_caption(text, self.hparams.normalization, role, self.hparams.max_words))
            except ValueError as err:
                raise DataFormatError(captions.path, cap_id, str(err)) from err
        return texts

    def _max_length(self, split: str) -> int | None:
        lengths = self.hparams.max_length
        return lengths["train" if split == "train" else "eval"] if isinstance(lengths, dict) else lengths

    def _store(self, split: str) -> FeatureStore | ImageFolderStore:
        spec = (self.hparams.split_features or {}).get(split, self.hparams.features)
        if isinstance(spec, dict):
            spec = FeatureSpec(**spec)
        return open_feature_store(
            spec.kind,
            self._path(spec.path),
            self._path(spec.ids) if spec.ids else None,
            self._path(spec.video2frames) if spec.video2frames else None,
            sys.maxsize if self.hparams.max_frames is None else self.hparams.max_frames,
            self.hparams.frame_sampling,
            image_model=spec.image_model,
            image_size=spec.image_size,
            image_train_scale=spec.image_train_scale,
            augment=split == "train",
        )

    @cached_property
    def _train_store(self) -> FeatureStore | ImageFolderStore:
        return self._store("train")

    @cached_property
    def _description_store(self) -> DescriptionFeatureStore:
        spec = self.hparams.description_features
        if isinstance(spec, dict):
            spec = DescriptionFeatureSpec(**spec)
        return DescriptionFeatureStore(self._path(spec.path), self._path(spec.ids) if spec.ids else None)

    @property
    def visual_dim(self) -> int:
        """Feature dimension of the visual store (linked into the model by the CLI)."""
        return self._train_store.dim

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size (linked into the model's text encoder by the CLI)."""
        return len(self.tokenizer)

    def _tokenize(self, captions: CaptionFile, role: str, split: str) -> TokenizedTexts:
        try:
            return TokenizedTexts(self.tokenizer, self._normalized(captions, role), self._max_length(split))
        except TextTooLongError as err:
            raise DataFormatError(captions.path, captions.ids[err.row], str(err)) from err

    def _items(self, split: str, captions: CaptionFile, store: FeatureStore | ImageFolderStore) -> VisualItems:
        id_file = (self.hparams.id_lists or {}).get(split)
        if id_file is not None:
            return VisualItems(read_id_list(self._path(id_file)), store, self._path(id_file))
        return VisualItems(captions.unique_visual_ids(), store, captions.path)

    def _descriptions(self, items: VisualItems, split: str) -> TokenizedTexts:
        folder = self._path(self.hparams.descriptions)
        texts = []
        for visual_id in items.ids:
            path = folder / f"{visual_id}.txt"
            if path.is_file():
                text = path.read_text(encoding="utf-8").strip()
            elif self.hparams.allow_missing_descriptions:
                text = ""
            else:
                raise DataFormatError(
                    path,
                    visual_id,
                    "missing MLLM description (set allow_missing_descriptions "
                    "to use an empty one, or run `leccr describe`)",
                )
            texts.append(normalize_caption(text, self.hparams.normalization, "description"))
        try:
            return TokenizedTexts(self.tokenizer, texts, self._max_length(split))
        except TextTooLongError as err:
            raise DataFormatError(folder / f"{items.ids[err.row]}.txt", items.ids[err.row], str(err)) from err

    def _build(self, split: str) -> dict:
        if split == "train":
            files = self._train_files
            source = files["source"]
            items = self._items("train", source, self._train_store)
            texts = {role: self._tokenize(f, role, split) for role, f in files.items()}
            rows = {"source": np.arange(len(source))}
            for role in files:
                if role != "source":
                    rows[role] = aligned_rows(source, files[role], expected_tag(role, self.language))
            features = None
            if "description" in self.roles and self.hparams.description_features is not None:
                features = ItemDescriptionFeatures(items, self._description_store, "the train split")
            elif "description" in self.roles:
                texts["description"] = self._descriptions(items, split)
                rows["description"] = positions_of(source, items)
            item_extras = self._bind_extras("item", "train", items.ids, items.source)
            caption_extras = self._bind_extras("caption", "train", source.ids, source.path)
            return {"train": PseudoParallelDataset(source, items, texts, rows, features, item_extras, caption_extras)}
        query_file = self._caption_file(split, "query")
        items = self._items(split, query_file, self._store(split))
        texts = {"query": self._tokenize(query_file, "query", split)}
        rows = {"query": np.arange(len(query_file))}
        if "translated" in self.query_roles:
            translated = self._caption_file(split, "translated")
            texts["translated"] = self._tokenize(translated, "translated", split)
            rows["translated"] = aligned_rows(query_file, translated, expected_tag("translated", self.language))
        gallery_texts, features = None, None
        if "description" in self.roles and self.hparams.description_features is not None:
            features = ItemDescriptionFeatures(items, self._description_store, f"the {split} split")
        elif "description" in self.roles:
            gallery_texts = {"description": self._descriptions(items, split)}
        gallery = Gallery(items, gallery_texts, features, self._bind_extras("item", split, items.ids, items.source))
        queries = QuerySet(
            query_file, items, texts, rows, self._bind_extras("caption", split, query_file.ids, query_file.path)
        )
        return {"queries": queries, "gallery": gallery}

    def _bind_extras(self, level: str, split: str, ids, source) -> dict:
        return bind_extras(self.extras, level, self.collection_dir, split, ids, Path(source))
