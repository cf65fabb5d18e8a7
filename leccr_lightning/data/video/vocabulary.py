"""The Dual Encoding text side: cleaning, the count >= 5 vocabulary, caption ids and bags of words, word2vec rows.

Spec: itr_video_methods §1.4, §1.9. Cleaning (LiJiaBei-7/rivrl:util/vocab.py:47-49): every character outside
``[A-Za-z0-9]`` becomes a space, lower-case, split on whitespace. The vocabulary keeps the words seen at least
``threshold`` (5) times, in order of first appearance (``Counter`` insertion order, util/vocab.py:59-87); the RNN
vocabulary prepends ``<pad> <start> <end> <unk>`` (ids 0-3), the BoW vocabulary is the bare word list. It is rebuilt
from the training captions instead of unpickling the released ``word_vocab_5.pkl``; ``read_released_vocabulary``
reads that pickle with a restricted unpickler (plain data only) so the two word lists can be compared.
A caption becomes ``<start> w_1 ... w_n <end>`` (unknown words -> ``<unk>``) and a bag of raw counts over the BoW
vocabulary, unknown words skipped, no normalisation (util/text2vec.py:55-74, util/tag_data_provider.py:201-208).
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError

RNN_SPECIALS = ("<pad>", "<start>", "<end>", "<unk>")
_NOT_ALNUM = re.compile(r"[^A-Za-z0-9]")


def clean_words(text: str) -> list[str]:
    """The official ``clean_str``: non-alphanumerics to spaces, lower-case, whitespace split."""
    return _NOT_ALNUM.sub(" ", text).strip().lower().split()


def build_word_list(captions: Iterable[str], threshold: int = 5) -> list[str]:
    """Words seen at least ``threshold`` times over the cleaned ``captions``, in order of first appearance."""
    if threshold < 1:
        raise ValueError(f"vocabulary threshold: expected at least 1, got {threshold}")
    counts = Counter(word for caption in captions for word in clean_words(caption))
    return [word for word, count in counts.items() if count >= threshold]


class TextVocabulary:
    """The BoW word list and the RNN vocabulary (the same words after the four specials)."""

    def __init__(self, words: Sequence[str]):
        if not words:
            raise ValueError("the vocabulary is empty: no word reaches the count threshold in the captions")
        self.words = list(words)
        self.bow_index = {word: i for i, word in enumerate(self.words)}
        self.rnn_tokens = [*RNN_SPECIALS, *self.words]
        self.rnn_index = {token: i for i, token in enumerate(self.rnn_tokens)}

    @property
    def rnn_size(self) -> int:
        """Size of the RNN vocabulary (word embedding rows)."""
        return len(self.rnn_tokens)

    @property
    def bow_size(self) -> int:
        """Size of the bag-of-words vector."""
        return len(self.words)

    def rnn_ids(self, text: str) -> list[int]:
        """``<start> w_1 ... w_n <end>``, unknown words as ``<unk>``."""
        unk = self.rnn_index["<unk>"]
        return [
            self.rnn_index["<start>"],
            *(self.rnn_index.get(w, unk) for w in clean_words(text)),
            self.rnn_index["<end>"],
        ]

    def bow_ids(self, text: str) -> list[int]:
        """BoW indices of the in-vocabulary words of ``text`` (with repeats)."""
        return [self.bow_index[w] for w in clean_words(text) if w in self.bow_index]


class DualEncodingTexts:
    """A split's captions encoded once: RNN ids and BoW indices as flat arrays plus offsets."""

    def __init__(self, vocabulary: TextVocabulary, texts: Sequence[str]):
        self.bow_size = vocabulary.bow_size
        rnn = [vocabulary.rnn_ids(t) for t in texts]
        bow = [vocabulary.bow_ids(t) for t in texts]
        self.rnn_offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in rnn])]).astype(np.int64)
        self.rnn = np.fromiter((i for ids in rnn for i in ids), dtype=np.int64, count=int(self.rnn_offsets[-1]))
        self.bow_offsets = np.concatenate([[0], np.cumsum([len(ids) for ids in bow])]).astype(np.int64)
        self.bow = np.fromiter((i for ids in bow for i in ids), dtype=np.int64, count=int(self.bow_offsets[-1]))

    def __len__(self) -> int:
        return len(self.rnn_offsets) - 1

    def batch(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """``input_ids`` [B, L] (``<pad>`` = 0), ``attention_mask`` [B, L] and ``bow`` [B, V] raw counts."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.rnn_offsets[rows], self.rnn_offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        positions = np.minimum(starts[:, None] + np.arange(width)[None, :], len(self.rnn) - 1)
        input_ids = np.where(mask, self.rnn[positions], 0)
        bow = np.zeros((len(rows), self.bow_size), dtype=np.float32)
        for i, row in enumerate(rows):
            np.add.at(bow[i], self.bow[self.bow_offsets[row] : self.bow_offsets[row + 1]], 1.0)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
            "bow": torch.from_numpy(bow),
        }


class _ReleasedVocabulary:
    """Stand-in for the official ``util.vocab.Vocabulary`` class: a plain attribute holder."""


def _reconstruct(cls, base, state):
    """``copyreg._reconstructor`` for protocol 0/1 pickles, limited to the stand-in class."""
    if cls is not _ReleasedVocabulary or base is not object or state is not None:
        raise pickle.UnpicklingError("unexpected object reconstruction in a vocabulary pickle")
    return object.__new__(cls)


class _VocabularyUnpickler(pickle.Unpickler):
    """Resolves the official ``Vocabulary`` class to a stand-in and refuses every other global."""

    VOCABULARY = {("util.vocab", "Vocabulary"), ("vocab", "Vocabulary"), ("__main__", "Vocabulary")}

    def find_class(self, module: str, name: str):
        if (module, name) in self.VOCABULARY:
            return _ReleasedVocabulary
        if (module, name) in {("copy_reg", "_reconstructor"), ("copyreg", "_reconstructor")}:
            return _reconstruct
        if (module, name) in {("__builtin__", "object"), ("builtins", "object")}:
            return object
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a vocabulary pickle")


def read_released_vocabulary(path: str | Path) -> list[str]:
    """The tokens of a released ``word_vocab_<t>.pkl`` in index order, read with a restricted unpickler that only
    builds the ``Vocabulary`` record and plain containers (anything else is refused)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"vocabulary pickle {path} does not exist")
    with path.open("rb") as handle:
        try:
            vocabulary = _VocabularyUnpickler(handle, encoding="latin1").load()
        except (pickle.UnpicklingError, EOFError, AttributeError, ValueError) as err:
            raise DataFormatError(path, 0, f"not a readable vocabulary pickle ({err})") from err
    index = getattr(vocabulary, "idx2word", None)
    if not isinstance(vocabulary, _ReleasedVocabulary) or not isinstance(index, dict):
        raise DataFormatError(path, 0, "expected a Vocabulary object with an idx2word dict")
    if sorted(index) != list(range(len(index))) or not all(isinstance(w, str) for w in index.values()):
        raise DataFormatError(path, 0, "idx2word must map 0..N-1 to words")
    return [index[i] for i in range(len(index))]


def word2vec_rows(tokens: Sequence[str], path: str | Path, seed: int = 0) -> np.ndarray:
    """Initial word embeddings [len(tokens), D] from a word2vec BigFile (names = words): the vector of every token
    the file has, uniform(-1, 1) from a generator seeded with ``seed`` for the others
    (LiJiaBei-7/rivrl:model.py:21-34; upstream draws from NumPy's global generator)."""
    from leccr_lightning.data.features import BigFileStore

    store = BigFileStore(path)
    row_of = {name: i for i, name in enumerate(store.names)}
    rng = np.random.default_rng(seed)
    out = rng.uniform(-1.0, 1.0, (len(tokens), store.dim)).astype(np.float32)
    found = [(i, row_of[t]) for i, t in enumerate(tokens) if t in row_of]
    if found:
        positions, rows = (np.asarray(v, dtype=np.int64) for v in zip(*found, strict=True))
        out[positions] = store.gather_rows(rows)
    return out
