"""Relevance providers: graded relevance r[query, candidate] in [0, 1] for ranking losses and NDCG.

Relevance is always indexed [query, candidate] (itr spec §10.2); the other retrieval direction reads the
transpose explicitly. Two families:

* in-batch providers (``InBatchRelevance``) give the [texts, visuals] matrix of a training batch, from the
  batch
  itself (binary, token-overlap cosine) or from caption embeddings on disk (BCLS §5.2 / Listwise RSC §6.1);
* split-level matrices for evaluation: ROUGE-L against each item's reference captions (TERAN, itr spec §9.3),
  or a precomputed float32 memmap (TERAN ``relevances/*.npy``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from leccr_lightning.data.errors import DataFormatError

MAPPINGS = ("cos", "shifted")


@dataclass
class BatchTexts:
    """What an in-batch provider may read: caption ids, the token ids of the texts, the visual index
    per row."""

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
    """r[i, j] = max_{k : index_k = index_j} sim[i, k]: each text against every caption of candidate j's
    item."""
    same_item = index[:, None] == index[None, :]
    expanded = similarity[:, None, :].masked_fill(~same_item[None, :, :], float("-inf"))
    return expanded.max(dim=2).values


class InBatchRelevance(ABC):
    """r[i, j] for text i and visual j of a training batch; positives get relevance 1 (BCLS/Listwise r_ii
    := 1)."""

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

    Mean pooling over valid tokens is the Sentence-BERT (MPNet) pooling; the model must be on disk (no
    download).
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
    """Split-level binary relevance [Q, G]: 1 where gallery item g is query q's item (ground truth from
    ids)."""
    return torch.nn.functional.one_hot(query_to_gallery.long(), num_gallery).float()


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of two token lists (dynamic programming, O(|a| |b|))."""
    previous = [0] * (len(b) + 1)
    for token in a:
        current = [0]
        for j, other in enumerate(b):
            current.append(previous[j] + 1 if token == other else max(previous[j + 1], current[j]))
        previous = current
    return previous[-1]


def rouge_l(candidate: str, references: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L of ``candidate`` against ``references`` (pycocoevalcap ``Rouge.calc_score``, TERAN §9.3).

    P = max_r LCS/|c|, R = max_r LCS/|r| over the references, F = (1 + beta^2) P R / (R + beta^2 P), beta =
    1.2;
    tokens are whitespace-split lower-cased words. 0 when P or R is 0.
    """
    tokens = candidate.lower().split()
    if not tokens or not references:
        return 0.0
    precision = recall = 0.0
    for reference in references:
        ref_tokens = reference.lower().split()
        if not ref_tokens:
            continue
        common = lcs_length(tokens, ref_tokens)
        precision = max(precision, common / len(tokens))
        recall = max(recall, common / len(ref_tokens))
    if precision == 0.0 or recall == 0.0:
        return 0.0
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)


def rouge_relevance(
    query_texts: Sequence[str], query_to_gallery: Sequence[int], num_gallery: int, beta: float = 1.2
) -> np.ndarray:
    """TERAN relevance [Q, G]: ROUGE-L of query caption q against the captions of gallery item g.

    The references of item g are the split's captions with ``query_to_gallery == g`` (a caption is among its
    own item's references, so its own item gets 1, itr spec §9.3). Cost O(Q * #captions * len^2) in Python:
    precompute once per split and save with :func:`save_relevance`.
    """
    if len(query_texts) != len(query_to_gallery):
        raise ValueError(
            f"query_texts ({len(query_texts)}) and query_to_gallery ({len(query_to_gallery)}) "
            "must have one entry per query"
        )
    references: list[list[str]] = [[] for _ in range(num_gallery)]
    for text, item in zip(query_texts, query_to_gallery, strict=True):
        if not 0 <= int(item) < num_gallery:
            raise ValueError(f"query_to_gallery entry {int(item)} is outside the gallery [0, {num_gallery})")
        references[int(item)].append(text)
    out = np.zeros((len(query_texts), num_gallery), dtype=np.float32)
    for q, text in enumerate(query_texts):
        for g, refs in enumerate(references):
            out[q, g] = rouge_l(text, refs, beta)
    return out


def save_relevance(path: str | Path, relevance: np.ndarray) -> None:
    """Write a [Q, G] relevance matrix as float32 ``.npy`` (readable by :func:`load_relevance` as a
    memmap)."""
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


class PrecomputedRelevance(SplitRelevance):
    """A relevance matrix on disk (``.npy`` or raw float32 ``.bin``, see :func:`load_relevance`), memory-mapped.

    ``transpose``: the file is stored [candidate, query] (TERAN ``relevances/*.npy`` for the i2t direction).
    """

    def __init__(self, path: str, transpose: bool = False):
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"relevance matrix {self.path} does not exist")
        self.transpose = transpose
        self._matrix: np.ndarray | None = None

    def validate(self, num_queries: int, num_gallery: int) -> None:
        self._matrix = load_relevance(self.path, num_queries, num_gallery, self.transpose)

    def __call__(self, query_positions: Tensor, gallery_positions: Tensor) -> Tensor:
        if self._matrix is None:
            raise ValueError(f"PrecomputedRelevance({self.path}): call validate(num_queries, num_gallery) first")
        rows = np.asarray(self._matrix[query_positions.cpu().numpy()], dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(rows[:, gallery_positions.cpu().numpy()]))

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_matrix"] = None
        return state
