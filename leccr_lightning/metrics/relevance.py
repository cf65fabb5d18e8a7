"""Relevance providers: graded relevance r[query, candidate] in [0, 1] for ranking losses and NDCG.

Relevance is always indexed [query, candidate] (itr spec §10.2); the other retrieval direction reads the
transpose explicitly. Two families:

* in-batch providers (``InBatchRelevance``) give the [texts, visuals] matrix of a training batch, from the batch
  itself (binary, token-overlap cosine) or from caption embeddings on disk (BCLS §5.2 / Listwise RSC §6.1);
* split-level providers (``SplitRelevance``) for evaluation: ROUGE-L against each item's reference captions
  (TERAN, itr spec §9.3; ``RougeRelevance`` computes it from the caption file and caches it on disk), or a
  precomputed float32 memmap (``PrecomputedRelevance``, TERAN ``relevances/*.npy``).
"""

from __future__ import annotations

import hashlib
import os
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rapidfuzz import process
from rapidfuzz.distance import LCSseq
from torch import Tensor

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.precomp import read_precomp_captions
from leccr_lightning.data.visualsearch import read_caption_file, read_id_list

MAPPINGS = ("cos", "shifted")


@dataclass
class BatchTexts:
    """What an in-batch provider may read: caption ids, the token ids of the texts, the visual index per row."""

    index: Tensor
    caption_ids: Sequence[str] | None = None
    input_ids: Tensor | None = None
    attention_mask: Tensor | None = None


def map_cosine(cosine: Tensor, mapping: str) -> Tensor:
    """``"cos"``: max(cos, 0) (ITM_CLS raw inner product, clipped to stay >= 0); ``"shifted"``: (1 + cos) / 2
    (Listwise RSC, itr spec §6.1)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping: expected one of {MAPPINGS}, got {mapping!r}")
    return cosine.clamp(min=0.0) if mapping == "cos" else (1.0 + cosine) / 2.0


def max_over_item(similarity: Tensor, index: Tensor) -> Tensor:
    """r[i, j] = max_{k : index_k = index_j} sim[i, k]: each text against every caption of candidate j's item."""
    same_item = index[:, None] == index[None, :]
    expanded = similarity[:, None, :].masked_fill(~same_item[None, :, :], float("-inf"))
    return expanded.max(dim=2).values


class InBatchRelevance(ABC):
    """r[i, j] for text i and visual j of a training batch; positives get relevance 1 (BCLS/Listwise r_ii := 1)."""

    @abstractmethod
    def similarity(self, texts: BatchTexts) -> Tensor:
        """Mapped text-text similarity [B, B] between the batch captions (row i, column k)."""

    def __call__(self, positive_mask: Tensor, texts: BatchTexts) -> Tensor:
        if positive_mask.shape != (len(texts.index), len(texts.index)):
            raise ValueError(
                f"{type(self).__name__}: expected a square [batch, batch] positive mask for "
                f"{len(texts.index)} texts, got {tuple(positive_mask.shape)} "
                "(in-batch relevance needs gather_negatives off)"
            )
        relevance = max_over_item(self.similarity(texts).float(), texts.index)
        return torch.where(positive_mask, torch.ones_like(relevance), relevance).detach()


class BinaryRelevance(InBatchRelevance):
    """r = 1 for the positives (same visual item), 0 otherwise."""

    def similarity(self, texts: BatchTexts) -> Tensor:
        return torch.zeros(len(texts.index), len(texts.index), device=texts.index.device)


class TokenOverlapRelevance(InBatchRelevance):
    """Cosine of bag-of-token count vectors of the batch captions, max over the item's captions, then mapped.

    A file-free stand-in for sentence-embedding relevance (used by the tiny experiments); ``mapping`` as in
    :func:`map_cosine`. Padding is excluded through the attention mask.
    """

    def __init__(self, mapping: str = "shifted"):
        map_cosine(torch.zeros(1), mapping)
        self.mapping = mapping

    def similarity(self, texts: BatchTexts) -> Tensor:
        if texts.input_ids is None or texts.attention_mask is None:
            raise ValueError("TokenOverlapRelevance needs the batch token ids and attention mask")
        valid = texts.attention_mask.bool()
        vocabulary, inverse = torch.unique(texts.input_ids, return_inverse=True)
        counts = torch.zeros(texts.input_ids.shape[0], vocabulary.numel(), device=texts.input_ids.device)
        counts.scatter_add_(1, inverse, valid.float())
        unit = torch.nn.functional.normalize(counts, dim=1)
        return map_cosine(unit @ unit.T, self.mapping)


class CaptionEmbeddingRelevance(InBatchRelevance):
    """BCLS / Listwise RSC relevance from offline caption embeddings (itr spec §5.2, §6.1): for text i and the visual
    item j, r_ij = max over the reference captions k of item j (all of them, 5 per image in the precomp releases) of
    the mapped similarity of e_k and e_i, as AAA-Zheng/Listwise_ITR ``data.py:54-59`` + ``model.py:152-166`` and
    ITM_CLS ``data.py:59-64`` + ``model.py:125-133`` compute it.

    ``mapping``: ``"shifted"`` L2-normalises the embeddings, then (1 + cos) / 2 (Listwise ``model.py:159-165``);
    ``"cos"`` is the raw inner product <e_k, e_i> of the stored vectors, neither normalised nor clipped (ITM_CLS
    ``model.py:132-133``; it equals the cosine for unit-norm files such as MPNet sentence embeddings).

    Args:
        embeddings: a ``.npy`` file [#captions, d].
        ids: a text file whose lines start with the caption id of each row (read at construction); ``None``: the
            rows are the DataModule's training captions in file order (``train_caption_ids``, as the released
            ``text_emb_path`` files are), read when the method binds it (``bind_data`` at fit start), a relative
            ``embeddings`` path then resolved against the DataModule's folder (``train_caps_emb.npy`` inside
            ``f30k_precomp/``).
        mapping: ``"shifted"`` or ``"cos"`` (above).

    Produce a file with a local sentence encoder, e.g. for the precomp layout::

        captions = read_precomp_captions("f30k_precomp/train_caps.txt")
        np.save("f30k_precomp/train_caps_emb.npy", encode_captions(captions, "/models/all-mpnet-base-v2"))
    """

    def __init__(self, embeddings: str, ids: str | None = None, mapping: str = "shifted"):
        if mapping not in MAPPINGS:
            raise ValueError(f"mapping: expected one of {MAPPINGS}, got {mapping!r}")
        self.mapping, self.ids_path = mapping, ids
        self.path = Path(embeddings)
        self.matrix: np.ndarray | None = None
        if ids is not None:
            self._load(self.path, read_leading_ids(ids))

    def bind_data(self, datamodule) -> None:
        """Without ``ids``: align the rows with ``datamodule.train_caption_ids``, a relative ``embeddings`` path
        resolved against ``datamodule.folder``."""
        if self.matrix is not None:
            return
        caption_ids = getattr(datamodule, "train_caption_ids", None)
        folder = getattr(datamodule, "folder", None)
        if caption_ids is None or (folder is None and not self.path.is_absolute()):
            raise ValueError(
                f"CaptionEmbeddingRelevance({self.path}) without ids needs a DataModule with 'train_caption_ids' "
                f"(and 'folder' for a relative path), such as PrecompDataModule; got {type(datamodule).__name__}"
            )
        self._load(self.path if self.path.is_absolute() else Path(folder) / self.path, list(caption_ids))

    def _load(self, path: Path, caption_ids: Sequence[str]) -> None:
        if not path.is_file():
            raise FileNotFoundError(f"caption embedding file {path} does not exist")
        matrix = np.load(path, mmap_mode="r")
        if matrix.ndim != 2 or matrix.shape[0] != len(caption_ids):
            raise DataFormatError(
                path, 0, f"expected a [{len(caption_ids)}, d] matrix (one row per caption id), got shape {matrix.shape}"
            )
        self.path, self.matrix = path, matrix
        self.row = {cap_id: i for i, cap_id in enumerate(caption_ids)}
        references: dict[str, list[int]] = {}
        for i, cap_id in enumerate(caption_ids):
            references.setdefault(cap_id.split("#", 1)[0], []).append(i)
        self.references = references

    def _vectors(self, rows: np.ndarray) -> Tensor:
        vectors = torch.from_numpy(np.asarray(self.matrix[rows], dtype=np.float32))
        return torch.nn.functional.normalize(vectors, dim=-1) if self.mapping == "shifted" else vectors

    def similarity(self, texts: BatchTexts) -> Tensor:
        """r[i, j] = max_k map(e_ref(k of item of row j), e_i) [B, B] for the batch captions (row i, column j)."""
        if self.matrix is None:
            raise ValueError(f"CaptionEmbeddingRelevance({self.path}) is not bound to a DataModule (bind_data)")
        if texts.caption_ids is None:
            raise ValueError("CaptionEmbeddingRelevance needs the batch caption ids")
        rows = []
        for cap_id in texts.caption_ids:
            if cap_id not in self.row:
                raise DataFormatError(self.path, cap_id, "no caption embedding for this caption id")
            rows.append(self.row[cap_id])
        references = [self.references[cap_id.split("#", 1)[0]] for cap_id in texts.caption_ids]
        width = max(len(r) for r in references)
        padded = np.array([r + [r[0]] * (width - len(r)) for r in references], dtype=np.int64)
        captions = self._vectors(np.asarray(rows))
        item_captions = self._vectors(padded.reshape(-1)).view(len(rows), width, -1)
        inner = torch.einsum("id,jkd->ijk", captions, item_captions).max(dim=2).values
        mapped = (1.0 + inner) / 2.0 if self.mapping == "shifted" else inner
        return mapped.to(texts.index.device)


def read_leading_ids(path: str | Path) -> list[str]:
    """The first whitespace-separated token of every non-empty line (caption files and id lists alike)."""
    ids = []
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            parts = line.split(maxsplit=1)
            if not parts:
                raise DataFormatError(path, number, "empty line; expected a caption id")
            ids.append(parts[0])
    return ids


def encode_captions(texts: Sequence[str], model_path: str, batch_size: int = 64, max_length: int = 64) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings [N, d] of ``texts`` with a local Hugging Face encoder.

    Mean pooling over valid tokens is the Sentence-BERT (MPNet) pooling; the model must be on disk (no download).
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, local_files_only=True)
    model = AutoModel.from_pretrained(model_path, local_files_only=True).eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            tokens = tokenizer(
                list(texts[start : start + batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            states = model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).last_hidden_state
            mask = tokens["attention_mask"].unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            chunks.append(torch.nn.functional.normalize(pooled, dim=1))
    return torch.cat(chunks).numpy().astype(np.float32)


def binary_relevance(query_to_gallery: Tensor, num_gallery: int) -> Tensor:
    """Split-level binary relevance [Q, G]: 1 where gallery item g is query q's item (ground truth from ids)."""
    return torch.nn.functional.one_hot(query_to_gallery.long(), num_gallery).float()


ROUGE_BETA = 1.2
"""beta of the ROUGE-L F-measure (pycocoevalcap ``Rouge.__init__``; TERAN evaluate_utils/rouge.py:44)."""
ROUGE_BLOCK_ROWS = 256
"""Query captions per rapidfuzz ``cdist`` call: bounds the [rows, #captions] LCS block held in memory."""
ROUGE_CACHE_VERSION = "rouge-l/1: lower-cased whitespace tokens, pycocoevalcap F-measure"
"""Part of every cache key: a change of the computation gives new cache files."""


def rouge_tokens(text: str) -> list[str]:
    """The ROUGE-L tokens of a caption: its lower-cased, whitespace-separated words.

    TERAN (evaluate_utils/rouge.py:59) lower-cases the raw caption and splits it on single spaces, which gives the
    same tokens for single-spaced captions; punctuation stays attached to its word (``"horse."``), as there.
    """
    return text.lower().split()


def rouge_relevance(
    query_texts: Sequence[str],
    query_to_gallery: Sequence[int],
    num_gallery: int,
    beta: float = ROUGE_BETA,
    workers: int | None = None,
) -> np.ndarray:
    """TERAN relevance [Q, G]: the ROUGE-L F-measure of caption q (candidate) against the captions of gallery item g.

    With LCS(q, r) the longest common subsequence of the :func:`rouge_tokens` of q and of a reference r, over the
    references r of item g (the captions with ``query_to_gallery == g``, so a caption's own item gets 1):
    P = max_r LCS / |q|, R = max_r LCS / |r| and F = (1 + beta^2) P R / (R + beta^2 P), 0 when P = R = 0;
    items without captions get 0 (itr spec §9.3, pycocoevalcap ``Rouge.calc_score``). The LCS lengths come from
    rapidfuzz's ``LCSseq`` over token-id sequences, ``process.cdist`` with ``workers`` threads (default
    ``torch.get_num_threads()``), in blocks of ``ROUGE_BLOCK_ROWS`` queries; P, R and F in float64, stored float32.
    """
    if len(query_texts) != len(query_to_gallery):
        raise ValueError(
            f"query_texts ({len(query_texts)}) and query_to_gallery ({len(query_to_gallery)}) "
            "must have one entry per query"
        )
    items = np.asarray(query_to_gallery, dtype=np.int64)
    outside = np.flatnonzero((items < 0) | (items >= num_gallery))
    if outside.size:
        q = int(outside[0])
        raise ValueError(f"query_to_gallery[{q}] = {int(items[q])} is outside the gallery [0, {num_gallery})")
    vocabulary: dict[str, int] = {}
    tokens = [[vocabulary.setdefault(word, len(vocabulary)) for word in rouge_tokens(text)] for text in query_texts]
    lengths = np.array([len(sequence) for sequence in tokens], dtype=np.float64)
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise ValueError(f"query caption {int(empty[0])} has no word: ROUGE-L needs at least one token")
    by_item = np.argsort(items, kind="stable")
    references = [tokens[i] for i in by_item]
    reference_lengths = lengths[by_item]
    present, starts = np.unique(items[by_item], return_index=True)
    beta2 = beta**2
    threads = torch.get_num_threads() if workers is None else workers
    out = np.zeros((len(tokens), num_gallery), dtype=np.float32)
    for start in range(0, len(tokens), ROUGE_BLOCK_ROWS):
        stop = min(start + ROUGE_BLOCK_ROWS, len(tokens))
        lcs = process.cdist(tokens[start:stop], references, scorer=LCSseq.similarity, dtype=np.int32, workers=threads)
        precision = np.maximum.reduceat(lcs, starts, axis=1) / lengths[start:stop, None]
        recall = np.maximum.reduceat(lcs / reference_lengths, starts, axis=1)
        numerator = (1 + beta2) * precision * recall
        denominator = recall + beta2 * precision
        score = np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)
        out[start:stop, present] = score
    return out


def save_relevance(path: str | Path, relevance: np.ndarray) -> None:
    """Write a [Q, G] relevance matrix as float32 ``.npy`` (readable by :func:`load_relevance` as a memmap)."""
    np.save(path, np.asarray(relevance, dtype=np.float32))


def load_relevance(path: str | Path, num_queries: int, num_gallery: int, transpose: bool = False) -> np.ndarray:
    """A precomputed relevance matrix as a read-only memmap [Q, G], checked against the split's shape.

    ``.npy`` files carry their shape; a raw float32 ``.bin`` is read as [Q, G]. TERAN stores
    [captions, images]; set ``transpose`` when a file is stored [candidate, query].
    """
    path = Path(path)
    expected = (num_gallery, num_queries) if transpose else (num_queries, num_gallery)
    if path.suffix == ".npy":
        matrix = np.load(path, mmap_mode="r")
    else:
        size = path.stat().st_size
        if size != 4 * expected[0] * expected[1]:
            raise DataFormatError(
                path,
                0,
                f"expected {expected[0]}x{expected[1]} float32 values "
                f"({4 * expected[0] * expected[1]} bytes), got {size} bytes",
            )
        matrix = np.memmap(path, dtype=np.float32, mode="r", shape=expected)
    if matrix.shape != expected:
        raise DataFormatError(path, 0, f"expected a relevance matrix of shape {expected}, got {matrix.shape}")
    return matrix.T if transpose else matrix


class SplitRelevance(ABC):
    """Relevance r[q, g] of a whole evaluation split, read by query and gallery positions (NDCG in the report).

    ``RetrievalMetric`` calls ``validate`` once with the split's sizes, then ``__call__`` per chunk of queries.
    """

    @abstractmethod
    def validate(self, num_queries: int, num_gallery: int) -> None:
        """Raise a ``ValueError`` naming the source when it does not cover ``num_queries`` x ``num_gallery``."""

    @abstractmethod
    def __call__(self, query_positions: Tensor, gallery_positions: Tensor) -> Tensor:
        """The float block r[query_positions][:, gallery_positions], values in [0, 1]."""


class MemmapRelevance(SplitRelevance, ABC):
    """A split relevance read from a [Q, G] matrix that ``validate`` memory-maps (``_matrix``)."""

    _matrix: np.ndarray | None = None

    def __call__(self, query_positions: Tensor, gallery_positions: Tensor) -> Tensor:
        if self._matrix is None:
            raise ValueError(f"{self!r}: call validate(num_queries, num_gallery) first")
        rows = np.asarray(self._matrix[query_positions.cpu().numpy()], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(rows[:, gallery_positions.cpu().numpy()]))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_matrix"] = None
        return state


class PrecomputedRelevance(MemmapRelevance):
    """A relevance matrix on disk (``.npy`` or raw float32 ``.bin``, see :func:`load_relevance`), memory-mapped.

    ``transpose``: the file is stored [candidate, query] (TERAN ``relevances/*.npy`` for the i2t direction).
    """

    def __init__(self, path: str, transpose: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"relevance matrix {self.path} does not exist")
        self.transpose = transpose

    def __repr__(self) -> str:
        return f"PrecomputedRelevance({self.path})"

    def validate(self, num_queries: int, num_gallery: int) -> None:
        self._matrix = load_relevance(self.path, num_queries, num_gallery, self.transpose)


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/leccr_lightning/relevance`` (``~/.cache/leccr_lightning/relevance`` by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "leccr_lightning" / "relevance"


class RougeRelevance(MemmapRelevance):
    """ROUGE-L relevance (:func:`rouge_relevance`) of an evaluation split, computed from its caption file once.

    Queries are the caption file's lines in order; the gallery is the ``gallery_ids`` list (VisualSearch
    ``FeatureData/<split>_id.txt``) or, without one, the captions' visual ids in order of first appearance: the
    order ``CCRDataModule`` evaluates in. With ``captions_per_item`` the file is a precomp ``{split}_caps.txt``
    whose line c belongs to item c // captions_per_item (``PrecompDataModule``). The matrix is cached in
    ``cache_dir`` (default :func:`default_cache_dir`) as ``rouge_l-<key>.npy``, the key a SHA-256 of the files'
    bytes, ``captions_per_item`` and ``beta``: ``leccr test`` computes it once per split, and again only when a
    file changes. The file is written to a temporary name and renamed, so concurrent ranks never read a partial one.
    """

    def __init__(
        self,
        captions: str,
        gallery_ids: str | None = None,
        captions_per_item: int | None = None,
        cache_dir: str | None = None,
        beta: float = ROUGE_BETA,
    ):
        self.captions = Path(captions)
        self.gallery_ids = None if gallery_ids is None else Path(gallery_ids)
        for path in (self.captions, self.gallery_ids):
            if path is not None and not path.is_file():
                raise FileNotFoundError(f"RougeRelevance: {path} does not exist")
        if captions_per_item is not None and (gallery_ids is not None or captions_per_item < 1):
            raise ValueError(
                "RougeRelevance: captions_per_item (precomp captions) must be a positive int and excludes gallery_ids"
            )
        self.captions_per_item = captions_per_item
        self.cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
        self.beta = beta

    def __repr__(self) -> str:
        return f"RougeRelevance({self.captions})"

    @property
    def cache_path(self) -> Path:
        """``<cache_dir>/rouge_l-<key>.npy``, the key hashing what the matrix depends on."""
        digest = hashlib.sha256(f"{ROUGE_CACHE_VERSION}\n{self.beta!r}\n{self.captions_per_item}\n".encode())
        digest.update(self.captions.read_bytes())
        if self.gallery_ids is not None:
            digest.update(b"\0gallery\0" + self.gallery_ids.read_bytes())
        return self.cache_dir / f"rouge_l-{digest.hexdigest()[:24]}.npy"

    def split(self) -> tuple[list[str], np.ndarray, int]:
        """The query texts, each query's gallery position and the gallery size, read from the files."""
        if self.captions_per_item is not None:
            texts = read_precomp_captions(self.captions)
            if len(texts) % self.captions_per_item:
                raise DataFormatError(
                    self.captions, len(texts), f"{len(texts)} captions are not {self.captions_per_item} per item"
                )
            return texts, np.arange(len(texts)) // self.captions_per_item, len(texts) // self.captions_per_item
        captions = read_caption_file(self.captions)
        gallery = read_id_list(self.gallery_ids) if self.gallery_ids is not None else captions.unique_visual_ids()
        position = {visual_id: i for i, visual_id in enumerate(gallery)}
        targets = np.empty(len(captions), dtype=np.int64)
        for row, (cap_id, parsed) in enumerate(zip(captions.ids, captions.parsed, strict=True)):
            if parsed.visual_id not in position:
                raise DataFormatError(
                    self.captions,
                    cap_id,
                    f"visual item {parsed.visual_id} is not in the gallery list {self.gallery_ids}",
                )
            targets[row] = position[parsed.visual_id]
        return list(captions.texts), targets, len(gallery)

    def validate(self, num_queries: int, num_gallery: int) -> None:
        path = self.cache_path
        if not path.is_file():
            texts, targets, size = self.split()
            relevance = rouge_relevance(texts, targets, size, self.beta)
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.stem}.{os.getpid()}.npy")
            save_relevance(partial, relevance)
            os.replace(partial, path)
        matrix = np.load(path, mmap_mode="r")
        if matrix.shape != (num_queries, num_gallery):
            raise ValueError(
                f"RougeRelevance: {self.captions} gives {matrix.shape[0]} queries x {matrix.shape[1]} gallery items, "
                f"the evaluated split has {num_queries} x {num_gallery}"
            )
        self._matrix = matrix
