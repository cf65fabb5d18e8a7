"""Caption normalisation policies, tokenizer loading or training, and one-off pre-tokenisation of a split.

Spec: ccr_methods §1.5. ``nrccr``: the English source and the English translations of the queries (``xx2enc``) are
cleaned (keep ``[A-Za-z0-9]`` words, lower-case, end with a period, capitalise the first letter), the MT target, its
back-translation and the human queries stay raw (LiJiaBei-7/nrccr:util/tag_data_provider_vid.py:14-49, 266-276,
355-360). ``nrccr_image`` also keeps the ``xx2enc`` queries raw, as the image provider does
(util/tag_data_provider_img.py:35, 394; that file's English cleaning calls a ``clean_str_cased`` it never defines,
:7, :39, so the published image code does not run as it is). ``leccr``: every caption goes through ``pre_caption``
(lower-case, ASCII punctuation and ``-``/``/`` to spaces, collapse spaces, keep the first 30 words); MLLM
descriptions stay raw.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

POLICIES = ("none", "nrccr", "nrccr_image", "leccr")
_LECCR_PUNCT = re.compile(r"[,.'!?\"()*#:;~\-/]")
_LECCR_SPACES = re.compile(r"\s{2,}")
_NRCCR_WORD = re.compile(r"[A-Za-z0-9]+")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
NRCCR_CLEANED_ROLES = {"nrccr": ("source", "translated"), "nrccr_image": ("source",)}


def normalize_caption(text: str, policy: str = "none", role: str = "source", max_words: int = 30) -> str:
    """Apply a normalisation policy to one caption (``role`` matters for ``nrccr``, which cleans English only)."""
    if policy == "none":
        return " ".join(text.split())
    if policy in NRCCR_CLEANED_ROLES:
        if role not in NRCCR_CLEANED_ROLES[policy]:
            return text.strip()
        cleaned = " ".join(_NRCCR_WORD.findall(text)).lower()
        if not cleaned.endswith("."):
            cleaned += "."
        return cleaned[:1].upper() + cleaned[1:]
    if policy == "leccr":
        return text if role == "description" else leccr_pre_caption(text, max_words)
    raise ValueError(f"unknown text normalisation policy {policy!r}; expected one of {POLICIES}")


def leccr_pre_caption(text: str, max_words: int = 30) -> str:
    """LECCR's ``pre_caption`` (LiJiaBei-7/leccr:LECCR/dataset/utils.py:31-55): lower-case; ``,.'!?"()*#:;~``, ``-``
    and ``/`` become spaces; ``<person>`` becomes ``person``; runs of two or more whitespace characters become one
    space; trailing newlines and surrounding spaces go; the first ``max_words`` space-separated words are kept.

    The official code applies it to every caption (retrieval_dataset.py:133,222) but not to the MLLM descriptions
    (:77). A caption left empty is an error (ValueError), as upstream.
    """
    caption = _LECCR_PUNCT.sub(" ", text.lower()).replace("<person>", "person")
    caption = _LECCR_SPACES.sub(" ", caption).rstrip("\n").strip(" ")
    words = caption.split(" ")
    if len(words) > max_words:
        caption = " ".join(words[:max_words])
    if not caption:
        raise ValueError(f"the LECCR text policy leaves no text of the caption {text!r}")
    return caption


def train_wordpiece(corpus: Iterable[str], vocab_size: int = 2000, lowercase: bool = True, strip_accents: bool = False):
    """A BERT-style WordPiece tokenizer learned from the captions: CJK characters split, accents kept unless
    ``strip_accents`` (they carry meaning in de/fr/cs), ``[CLS] x [SEP]``.

    The vocabulary is the special tokens, every character seen (``c`` and ``##c``, so no word is ever unknown) and
    then the most frequent whole words up to ``vocab_size`` (ties in code-point order). It is built here rather than
    with ``tokenizers``' WordPiece trainer, whose result depends on hash-map order and so changes from process to
    process; the same captions always give the same ids.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents, handle_chinese_chars=True)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = Counter(
        word for text in corpus for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    characters = sorted({c for word in counts for c in word})
    alphabet = [*characters, *(f"##{c}" for c in characters)]
    budget = max(vocab_size - len(SPECIAL_TOKENS) - len(alphabet), 0)
    words = [w for w, _ in sorted(counts.items(), key=lambda item: (-item[1], item[0])) if len(w) > 1][:budget]
    vocab = {token: i for i, token in enumerate(dict.fromkeys([*SPECIAL_TOKENS, *alphabet, *words]))}
    tokenizer = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tokenizer.normalizer = normalizer
    tokenizer.pre_tokenizer = pre_tokenizer
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def load_or_train_tokenizer(
    spec: str, corpus: Sequence[str], cache_dir: str | Path, vocab_size: int = 2000, lowercase: bool | None = None
):
    """``spec`` = ``"train"`` (WordPiece trained on ``corpus``) or a local path / cached Hugging Face name.

    A trained tokenizer is saved under ``cache_dir`` keyed by a hash of the corpus and size, created exclusively
    (``os.link``), so every process and every later run (fit, then test) shares the same vocabulary.

    ``lowercase`` is BERT's ``do_lower_case``: ``True`` lower-cases and strips accents before WordPiece, in every
    language (NRCCR loads the cased mBERT so, LiJiaBei-7/nrccr:util/tag_data_provider_vid.py:19-27), ``False`` keeps
    case and accents; ``None`` keeps the tokenizer's own setting (a trained WordPiece lower-cases and keeps accents).
    """
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if spec != "train":
        options = {} if lowercase is None else {"do_lower_case": lowercase}
        try:
            return AutoTokenizer.from_pretrained(spec, local_files_only=True, **options)
        except OSError as err:
            raise OSError(
                f"tokenizer {spec!r} is neither a local directory nor in the local Hugging Face cache; set "
                "data.init_args.tokenizer to a local tokenizer directory (no network at run time) or to 'train'"
            ) from err
    casing = "" if lowercase is None else f"lowercase={lowercase}\n"
    digest = hashlib.sha1(f"{vocab_size}\n{casing}".encode() + "\n".join(corpus).encode()).hexdigest()[:16]
    final = Path(cache_dir) / f"wordpiece-v2-{vocab_size}-{digest}.json"
    if not final.is_file():
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_suffix(f".{os.getpid()}.tmp")
        casing_options = {} if lowercase is None else {"lowercase": lowercase, "strip_accents": lowercase}
        train_wordpiece(corpus, vocab_size, **casing_options).backend_tokenizer.save(str(tmp))
        with contextlib.suppress(FileExistsError):
            os.link(tmp, final)
        tmp.unlink(missing_ok=True)
    return PreTrainedTokenizerFast(
        tokenizer_file=str(final),
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )


def tokenizer_state(tokenizer) -> dict:
    """What rebuilds a fast tokenizer exactly: its ``tokenizers`` JSON and its special tokens (plain strings, so a
    checkpoint that holds them still loads with ``weights_only=True``)."""
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(f"only a fast (tokenizers-backed) tokenizer can be serialised, got {type(tokenizer).__name__}")
    return {"json": tokenizer.backend_tokenizer.to_str(), "special_tokens": dict(tokenizer.special_tokens_map)}


def tokenizer_from_state(state: dict):
    """The tokenizer that ``tokenizer_state`` described (same normaliser, pre-tokeniser, vocabulary and template)."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(state["json"]), **state["special_tokens"])


class TextTooLongError(ValueError):
    """A text with more tokens than its tokenizer's ``model_max_length`` (``row``: its position in the split)."""

    def __init__(self, row: int, length: int, limit: int) -> None:
        super().__init__(f"{length} tokens, more than the tokenizer's model_max_length {limit}; set a max_length")
        self.row = row


class TokenizedTexts:
    """A split's captions tokenised once: a flat int32 id array plus offsets; batches are padded to the longest."""

    def __init__(self, tokenizer, texts: Sequence[str], max_length: int | None = 64):
        """``max_length`` tokens per text at most ([CLS] and [SEP] included); ``None`` keeps every token, and a text
        longer than the tokenizer's ``model_max_length`` (512 for mBERT) is then a ``TextTooLongError``."""
        from transformers.tokenization_utils_base import VERY_LARGE_INTEGER

        truncate = max_length is not None
        encoded = tokenizer(list(texts), truncation=truncate, max_length=max_length, add_special_tokens=True)
        encoded = encoded["input_ids"]
        lengths = np.fromiter((len(ids) for ids in encoded), dtype=np.int64, count=len(encoded))
        limit = getattr(tokenizer, "model_max_length", None)
        if not truncate and limit is not None and limit < VERY_LARGE_INTEGER and len(lengths):
            row = int(lengths.argmax())
            if lengths[row] > limit:
                raise TextTooLongError(row, int(lengths[row]), int(limit))
        self.offsets = np.concatenate([[0], np.cumsum(lengths)])
        self.ids = np.fromiter((t for ids in encoded for t in ids), dtype=np.int32, count=int(self.offsets[-1]))
        self.pad_id = int(tokenizer.pad_token_id)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def batch(self, rows: Sequence[int]) -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` [B, L] for the given caption rows, L = longest in the batch."""
        rows = np.asarray(rows, dtype=np.int64)
        starts, ends = self.offsets[rows], self.offsets[rows + 1]
        lengths = ends - starts
        width = int(lengths.max())
        mask = np.arange(width)[None, :] < lengths[:, None]
        positions = np.minimum(starts[:, None] + np.arange(width)[None, :], len(self.ids) - 1)
        input_ids = np.where(mask, self.ids[positions], self.pad_id).astype(np.int64)
        return {
            "input_ids": torch.from_numpy(input_ids),
            "attention_mask": torch.from_numpy(mask.astype(np.int64)),
        }
