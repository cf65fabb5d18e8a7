"""The SCAN "precomp" image-text layout (itr spec §4.5, §8) and a DataModule with the ``CCRDataModule`` batches.

A split folder holds ``{split}_caps.txt`` (one caption per line, ``captions_per_image`` = 5 consecutive lines per
image: caption c belongs to image c // 5), ``{split}_ims.npy`` (BUTD region sets [N, 36, 2048] or global features
[N, D], float32) and optionally ``{split}_ids.txt`` (external image ids, e.g. COCO ids). Some releases store the
image array with one row per caption, each image repeated 5 times (the SCAN loaders' ``im_div`` quirk); a reader
recognises it by its row count, checks that the first image's rows repeat, and reads every 5th row.

Captions get synthetic VisualSearch ids ``<image_index>#enc#<k>`` so the id-based ground truth of the shared metric
applies unchanged; every caption is an English ``source`` (and, for methods that want it, ``target``) caption. Text
is tokenised with a SCAN word vocabulary (the released ``vocab/*_precomp_vocab.json`` or one built from the training
captions, for the RVSE++ BiGRU) or with any tokenizer ``data/text.py`` loads or trains.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.datasets import Gallery, PseudoParallelDataset, QuerySet, VisualItems
from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import FeatureStore
from leccr_lightning.data.split_module import RetrievalDataModule
from leccr_lightning.data.text import TokenizedTexts, load_or_train_tokenizer
from leccr_lightning.data.visualsearch import CaptionFile, CaptionId

CAPTIONS_PER_IMAGE = 5
PRECOMP_ROLES = ("source", "target")
SCAN_SPECIAL_WORDS = ("<pad>", "<start>", "<end>", "<unk>")
MASK_WORD = "<mask>"


def read_precomp_captions(path: str | Path) -> list[str]:
    """The captions of a ``{split}_caps.txt`` file in line order (UTF-8, none empty; errors name the line)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    captions = []
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataFormatError(path, line_no, f"bytes that are not UTF-8 ({err.reason})") from err
            if not text:
                raise DataFormatError(path, line_no, "empty caption; expected one caption per line")
            captions.append(text)
    if not captions:
        raise DataFormatError(path, 0, "the file holds no captions")
    return captions


def read_precomp_ids(path: str | Path, num_images: int, captions_per_image: int = CAPTIONS_PER_IMAGE) -> list[str]:
    """External image ids from ``{split}_ids.txt``: one line per image, or one per caption (5 equal lines/image)."""
    path = Path(path)
    lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    for line_no, line in enumerate(lines, start=1):
        if not line:
            raise DataFormatError(path, line_no, "empty line; expected an image id")
    if len(lines) == num_images:
        return lines
    if len(lines) != num_images * captions_per_image:
        raise DataFormatError(
            path,
            0,
            f"{len(lines)} ids; expected one per image ({num_images}) or one per caption "
            f"({num_images * captions_per_image})",
        )
    for line_no, line in enumerate(lines, start=1):
        first = lines[(line_no - 1) // captions_per_image * captions_per_image]
        if line != first:
            raise DataFormatError(path, line_no, f"id {line} differs from {first}, the id of the same image's captions")
    return lines[::captions_per_image]


class PrecompStore(FeatureStore):
    """``{split}_ims.npy`` memory-mapped behind the ``FeatureStore`` interface; visual id ``str(i)`` = image i.

    Region sets [N, R, D] are viewed as [N R, D] rows, image i owning rows i R ... i R + R - 1 (``visual`` batches
    [B, R, D], all regions valid); a global array [N, D] gives image i row i. When the array has one row per
    caption (``num_rows == num_captions``), image i is row ``captions_per_image * i``.
    """

    def __init__(
        self,
        path: str | Path,
        num_captions: int,
        captions_per_image: int = CAPTIONS_PER_IMAGE,
        max_images: int | None = None,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"feature array {self.path} does not exist")
        array = np.load(self.path, mmap_mode="r")
        if array.ndim not in (2, 3) or not np.issubdtype(array.dtype, np.floating):
            raise DataFormatError(
                self.path, 0, f"expected a float array [N, regions, D] or [N, D], got {array.dtype} {array.shape}"
            )
        num_images = num_captions // captions_per_image
        stride = self._image_stride(array, num_images, num_captions, captions_per_image)
        self.regions = array.shape[1] if array.ndim == 3 else 1
        self._shape = (array.shape[0] * self.regions, array.shape[-1])
        self._array: np.ndarray | None = None
        self.names = [str(i) for i in range(num_images if max_images is None else min(max_images, num_images))]
        super().__init__(None, max_frames=self.regions)
        offsets = np.arange(self.regions, dtype=np.int64)
        self._frames = {name: i * stride * self.regions + offsets for i, name in enumerate(self.names)}
        self.repeated = stride > 1

    def _image_stride(self, array: np.ndarray, num_images: int, num_captions: int, captions_per_image: int) -> int:
        """Rows between consecutive images: 1, or ``captions_per_image`` for a repeated-image release."""
        if array.shape[0] == num_images:
            return 1
        if array.shape[0] == num_captions:
            first = np.asarray(array[:captions_per_image])
            if not (first == first[:1]).all():
                raise DataFormatError(
                    self.path,
                    0,
                    f"{array.shape[0]} rows = one per caption, but rows 0..{captions_per_image - 1} differ; expected "
                    f"each image repeated {captions_per_image} times (or {num_images} rows, one per image)",
                )
            return captions_per_image
        raise DataFormatError(
            self.path,
            0,
            f"{array.shape[0]} feature rows for {num_captions} captions; expected {num_images} (one per image, "
            f"{captions_per_image} captions each) or {num_captions} (each image repeated {captions_per_image} times)",
        )

    @property
    def num_images(self) -> int:
        """Images addressed by this store (all of the split, or the first ``max_images``)."""
        return len(self.names)

    @property
    def shape(self) -> tuple[int, int]:
        return self._shape

    def _images(self) -> np.ndarray:
        """The array as stored ([rows, R, D] or [rows, D]), memory-mapped once per process."""
        if self._array is None:
            self._array = np.load(self.path, mmap_mode="r")
        return self._array

    def _matrix(self) -> np.ndarray:
        return self._images().reshape(self._shape)

    def batch(self, row_lists: Sequence[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Region sets [B, R, D] (every region valid) read with one fancy index over whole images (one copy)."""
        stored_rows = np.fromiter((rows[0] // self.regions for rows in row_lists), dtype=np.int64, count=len(row_lists))
        block = np.asarray(self._images()[stored_rows], dtype=np.float32)
        visual = torch.from_numpy(block.reshape(len(stored_rows), self.regions, -1))
        return visual, torch.ones(visual.shape[:2], dtype=torch.bool)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_array"] = None
        return state


@dataclass(frozen=True)
class PrecompSplit:
    """One split of a precomp folder: captions with synthetic ids, the image store, the external image ids."""

    name: str
    captions: CaptionFile
    store: PrecompStore
    external_ids: list[str] | None

    @property
    def num_images(self) -> int:
        return self.store.num_images


def read_precomp_split(
    folder: str | Path,
    split: str,
    captions_per_image: int = CAPTIONS_PER_IMAGE,
    max_images: int | None = None,
) -> PrecompSplit:
    """Read ``{split}_caps.txt``, ``{split}_ims.npy`` and ``{split}_ids.txt`` (if present) of a precomp folder.

    Caption line c (0-based) becomes ``<c // captions_per_image>#enc#<c % captions_per_image>``. ``max_images`` keeps
    the first images and their captions (RVSE++ validates on the first 1,000 COCO ``dev`` images, itr spec §4.4).
    """
    folder = Path(folder)
    caps_path = folder / f"{split}_caps.txt"
    texts = read_precomp_captions(caps_path)
    if len(texts) % captions_per_image:
        raise DataFormatError(
            caps_path,
            len(texts),
            f"the file ends after {len(texts)} captions, not a multiple of {captions_per_image} "
            f"({captions_per_image} consecutive captions per image)",
        )
    if max_images is not None and max_images < 1:
        raise ValueError(f"max_images must be a positive int or None, got {max_images}")
    num_images = len(texts) // captions_per_image
    ids_path = folder / f"{split}_ids.txt"
    external = read_precomp_ids(ids_path, num_images, captions_per_image) if ids_path.is_file() else None
    store = PrecompStore(folder / f"{split}_ims.npy", len(texts), captions_per_image, max_images)
    texts = texts[: store.num_images * captions_per_image]
    external = None if external is None else external[: store.num_images]
    per_image = captions_per_image
    parsed = tuple(CaptionId(str(c // per_image), "enc", str(c % per_image)) for c in range(len(texts)))
    ids = tuple(p.with_tag("enc") for p in parsed)
    return PrecompSplit(split, CaptionFile(caps_path, ids, tuple(texts), parsed), store, external)


def write_precomp(
    folder: str | Path,
    split: str,
    captions: Sequence[str],
    features: np.ndarray,
    ids: Sequence[str] | None = None,
) -> Path:
    """Write ``{split}_caps.txt`` (one caption per line), ``{split}_ims.npy`` (float32) and optionally
    ``{split}_ids.txt`` as given (no checks, so tests can also write malformed splits); returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{split}_caps.txt").write_text("".join(f"{c}\n" for c in captions), encoding="utf-8")
    np.save(folder / f"{split}_ims.npy", np.asarray(features, dtype=np.float32))
    if ids is not None:
        (folder / f"{split}_ids.txt").write_text("".join(f"{i}\n" for i in ids), encoding="utf-8")
    return folder


def _word_pre_tokenizer():
    """Lower-case, then split on whitespace and punctuation (the stand-in for SCAN's NLTK ``word_tokenize``)."""
    from tokenizers import normalizers, pre_tokenizers

    return normalizers.Lowercase(), pre_tokenizers.BertPreTokenizer()


def build_word_vocab(captions: Sequence[str], min_count: int = 4) -> dict[str, int]:
    """SCAN ``vocab.py`` over ``captions``: ``<pad> <start> <end> <unk>`` = 0..3, then every word seen at least
    ``min_count`` times (SCAN ``--threshold`` 4 [recall]) in order of first appearance, then ``<mask>`` (RVSE++)."""
    normalizer, pre_tokenizer = _word_pre_tokenizer()
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(word for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(caption)))
    words = [w for w, n in counts.items() if n >= min_count and w not in SCAN_SPECIAL_WORDS and w != MASK_WORD]
    return {word: i for i, word in enumerate((*SCAN_SPECIAL_WORDS, *words, MASK_WORD))}


def read_scan_vocab(path: str | Path) -> dict[str, int]:
    """``word2idx`` of a released SCAN vocabulary (``vocab/{f30k,coco}_precomp_vocab.json``), plus ``<mask>``."""
    path = Path(path)
    try:
        word2idx = json.loads(path.read_text(encoding="utf-8"))["word2idx"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataFormatError(path, 0, f"expected a JSON object with a 'word2idx' mapping ({err})") from err
    missing = [w for w in SCAN_SPECIAL_WORDS if w not in word2idx]
    if missing:
        raise DataFormatError(path, 0, f"word2idx lacks the special words {missing}")
    word2idx = {str(w): int(i) for w, i in word2idx.items()}
    if sorted(word2idx.values()) != list(range(len(word2idx))):
        raise DataFormatError(path, 0, "word2idx indices must be 0..V-1 without gaps or repeats")
    if MASK_WORD not in word2idx:
        word2idx[MASK_WORD] = len(word2idx)
    return word2idx


def word_level_tokenizer(word2idx: dict[str, int]):
    """A fast tokenizer over a SCAN word vocabulary: lower-case, word split, ``<start> words <end>``, ``<unk>``."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    normalizer, pre_tokenizer = _word_pre_tokenizer()
    tokenizer = Tokenizer(models.WordLevel(vocab=word2idx, unk_token="<unk>"))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<start> $A <end>",
        special_tokens=[("<start>", word2idx["<start>"]), ("<end>", word2idx["<end>"])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<start>",
        eos_token="<end>",
        mask_token=MASK_WORD,
    )


def _sample_generator(seed: int, epoch: int, caption_id: str, stream: str) -> torch.Generator:
    """A generator seeded from (seed, epoch, caption id, stream) alone: the same draws whatever the batch, the
    worker, the rank or a resumption from a checkpoint."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{caption_id}/{stream}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & ((1 << 63) - 1))


class RegionCaptionAugmentation:
    """The RVSE++ training augmentations (AAA-Zheng/RVSEPP ``image_caption.py:53-98``), applied to a collated batch.

    * Region drop: every region of an image is kept when u > ``region_drop`` (u ~ U[0, 1), 0.2, ``:53-56``); the
      kept regions are moved to the front and the set zero-padded to the longest set of the batch, as the official
      ``collate_fn`` pads (``:118-123``; the BatchNorm of the region MLP sees the same rows).
    * Caption perturbation: every token, ``<start>`` and ``<end>`` included, is perturbed when u < ``token_perturb``
      (0.2, ``:79-94``); then with v = u / ``token_perturb`` it becomes the mask token when v < ``mask_share`` (0.5),
      a uniformly random id of the vocabulary when v < ``mask_share + random_share`` (0.1), and is deleted otherwise
      (0.4).

    Each caption draws from its own generator seeded by (``seed``, epoch, caption id, stream), so a resumed run draws
    exactly what an uninterrupted one draws. Differences from the official code: an image whose every region would
    be dropped keeps them all and a caption whose every token would be deleted keeps all its tokens (the official
    code fails on an empty set; p = 0.2^36 for BUTD regions); draws come from torch generators, not Python's
    ``random`` / NumPy's global state.
    """

    def __init__(
        self,
        region_drop: float = 0.2,
        token_perturb: float = 0.2,
        mask_share: float = 0.5,
        random_share: float = 0.1,
        seed: int = 0,
    ):
        for name, value in (("region_drop", region_drop), ("token_perturb", token_perturb)):
            if not 0.0 <= value < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {value}")
        if mask_share < 0 or random_share < 0 or mask_share + random_share > 1:
            raise ValueError(
                f"mask_share + random_share must lie in [0, 1] with both >= 0, got {mask_share} + {random_share}"
            )
        self.region_drop, self.token_perturb = region_drop, token_perturb
        self.mask_share, self.random_share, self.seed = mask_share, random_share, seed

    def drop_regions(
        self, visual: torch.Tensor, mask: torch.Tensor, generators: Sequence[torch.Generator]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``visual`` [B, R, D] and ``mask`` [B, R] with the dropped regions removed (kept ones first, zero-padded)."""
        kept = []
        for row, generator in enumerate(generators):
            regions = mask[row].bool().nonzero().squeeze(1)
            keep = torch.rand(len(regions), generator=generator) > self.region_drop
            kept.append(regions[keep.to(regions.device)] if bool(keep.any()) else regions)
        width = max(len(k) for k in kept)
        out = visual.new_zeros(visual.shape[0], width, visual.shape[2])
        out_mask = torch.zeros(visual.shape[0], width, dtype=torch.bool, device=visual.device)
        for row, regions in enumerate(kept):
            out[row, : len(regions)] = visual[row, regions]
            out_mask[row, : len(regions)] = True
        return out, out_mask

    def perturb_tokens(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        generators: Sequence[torch.Generator],
        mask_id: int,
        vocab_size: int,
        pad_id: int,
    ) -> dict[str, torch.Tensor]:
        """Perturbed ``input_ids`` / ``attention_mask`` [B, L'] (valid tokens first, ``pad_id`` beyond)."""
        captions = []
        for row, generator in enumerate(generators):
            tokens = input_ids[row, attention_mask[row].bool()]
            u = torch.rand(len(tokens), generator=generator, dtype=torch.float64)
            random_ids = torch.randint(vocab_size, (len(tokens),), generator=generator)
            v = u / self.token_perturb if self.token_perturb > 0 else u
            hit = u < self.token_perturb
            masked = hit & (v < self.mask_share)
            randomised = hit & ~masked & (v < self.mask_share + self.random_share)
            deleted = hit & ~masked & ~randomised
            new = torch.where(masked, torch.full_like(tokens, mask_id), tokens)
            new = torch.where(randomised, random_ids.to(tokens), new)
            kept = new[~deleted.to(new.device)]
            captions.append(kept if len(kept) else tokens)
        width = max(len(c) for c in captions)
        ids = input_ids.new_full((len(captions), width), pad_id)
        out_mask = attention_mask.new_zeros(len(captions), width)
        for row, caption in enumerate(captions):
            ids[row, : len(caption)] = caption
            out_mask[row, : len(caption)] = 1
        return {"input_ids": ids, "attention_mask": out_mask}

    def __call__(self, batch: Mapping, epoch: int, mask_id: int | None, vocab_size: int, pad_id: int) -> dict:
        """A copy of the training ``batch`` with dropped regions and perturbed captions of every text role."""
        caption_ids = batch["caption_ids"]
        out = dict(batch)
        if self.region_drop > 0:
            generators = [_sample_generator(self.seed, epoch, c, "regions") for c in caption_ids]
            out["visual"], out["visual_mask"] = self.drop_regions(batch["visual"], batch["visual_mask"], generators)
        if self.token_perturb > 0:
            if mask_id is None and self.mask_share > 0:
                raise ValueError("caption perturbation masks tokens, but the tokenizer has no mask token")
            out["text"] = {
                role: self.perturb_tokens(
                    tokens["input_ids"],
                    tokens["attention_mask"],
                    [_sample_generator(self.seed, epoch, c, f"text/{role}") for c in caption_ids],
                    -1 if mask_id is None else mask_id,
                    vocab_size,
                    pad_id,
                )
                for role, tokens in batch["text"].items()
            }
        return out


class PrecompDataModule(RetrievalDataModule):
    """SCAN precomp image-text data with exactly the ``CCRDataModule`` batch contract.

    Training batches: ``visual`` [B, R, D] (R = regions, 1 for global features), ``visual_mask``, ``visual_index``,
    ``text`` (each role in ``roles`` is the English caption itself), ``caption_ids``. Validation / test / predict:
    [queries, gallery] loaders, the queries with the ``query`` role, ``position`` and ``target``.

    Args:
        root: the folder holding the precomp folders (``$HOME/data`` in SCAN/VSE-infinity).
        collection: the precomp folder (``f30k_precomp``, ``coco_precomp``).
        train_split / val_split / test_split: file prefixes (F30K: train/dev/test; COCO 5K test: ``testall``).
        val_max_images: validate on the first images only (COCO ``dev``: 1,000 images, itr spec §4.4).
        captions_per_image: consecutive caption lines per image (5 in every release).
        roles: training text roles, a subset of ``source``/``target`` holding ``source``.
        tokenizer: ``"words"`` (SCAN word vocabulary: ``vocab_json`` when given, else built from the training
            captions with ``word_min_count``), ``"train"`` (WordPiece of ``tokenizer_vocab_size`` on the training
            captions) or a local Hugging Face tokenizer directory / cached name.
        cache_dir: where a trained WordPiece tokenizer is cached (default ``<root>/<collection>/cache``).
        drop_last: drop the last incomplete training batch (RVSE++ ``drop_last``, itr spec §4.4).
        shuffle_seed: seed of the per-epoch training permutation (see ``EpochShuffleSampler``).
    """

    def __init__(
        self,
        root: str,
        collection: str = "f30k_precomp",
        train_split: str = "train",
        val_split: str = "dev",
        test_split: str = "test",
        val_max_images: int | None = None,
        captions_per_image: int = CAPTIONS_PER_IMAGE,
        roles: list[str] | None = None,
        tokenizer: str = "words",
        vocab_json: str | None = None,
        word_min_count: int = 4,
        tokenizer_vocab_size: int = 2000,
        max_length: int = 64,
        cache_dir: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 0,
        drop_last: bool = True,
        shuffle_seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.folder = Path(root) / collection
        if not self.folder.is_dir():
            raise FileNotFoundError(
                f"precomp folder {self.folder} does not exist (set data.init_args.root / collection to the folder "
                "holding {train,dev,test}_caps.txt and _ims.npy)"
            )
        self.roles = list(roles or ["source", "target"])
        unknown = [r for r in self.roles if r not in PRECOMP_ROLES]
        if unknown or "source" not in self.roles:
            raise ValueError(f"roles must be a subset of {PRECOMP_ROLES} holding 'source', got {self.roles}")
        if vocab_json is not None and tokenizer != "words":
            raise ValueError(f"vocab_json is a word vocabulary: it needs tokenizer 'words', got {tokenizer!r}")
        self.tokenizer = self._make_tokenizer()

    def _make_tokenizer(self):
        hp = self.hparams
        if hp.tokenizer == "words":
            if hp.vocab_json is not None:
                return word_level_tokenizer(read_scan_vocab(hp.vocab_json))
            return word_level_tokenizer(build_word_vocab(self._train.captions.texts, hp.word_min_count))
        corpus = list(self._train.captions.texts) if hp.tokenizer == "train" else []
        cache = Path(hp.cache_dir) if hp.cache_dir is not None else self.folder / "cache"
        return load_or_train_tokenizer(hp.tokenizer, corpus, cache, hp.tokenizer_vocab_size)

    @cached_property
    def _train(self) -> PrecompSplit:
        return read_precomp_split(self.folder, self.hparams.train_split, self.hparams.captions_per_image)

    @property
    def visual_dim(self) -> int:
        """Feature dimension D of the image array (linked into the model by the CLI)."""
        return self._train.store.dim

    @property
    def vocab_size(self) -> int:
        """Tokenizer vocabulary size (linked into the model's text encoder by the CLI)."""
        return len(self.tokenizer)

    @property
    def train_caption_ids(self) -> tuple[str, ...]:
        """The training caption ids in ``{train_split}_caps.txt`` line order (the row order of the released caption
        embedding files, Listwise_ITR ``data.py:26,54-59``)."""
        return self._train.captions.ids

    def precomp_split(self, split: str) -> PrecompSplit:
        """The raw precomp split behind ``train``/``val``/``test`` (captions, store, external image ids)."""
        if split == "train":
            return self._train
        hp = self.hparams
        name = {"val": hp.val_split, "test": hp.test_split}[split]
        limit = hp.val_max_images if split == "val" else None
        return read_precomp_split(self.folder, name, hp.captions_per_image, limit)

    def _build(self, split: str) -> dict:
        data = self.precomp_split(split)
        items = VisualItems(data.store.names, data.store, data.store.path)
        texts = TokenizedTexts(self.tokenizer, data.captions.texts, self.hparams.max_length)
        rows = np.arange(len(data.captions))
        if split == "train":
            roles = dict.fromkeys(self.roles, texts)
            return {"train": PseudoParallelDataset(data.captions, items, roles, dict.fromkeys(self.roles, rows))}
        return {
            "queries": QuerySet(data.captions, items, {"query": texts}, {"query": rows}),
            "gallery": Gallery(items),
        }
