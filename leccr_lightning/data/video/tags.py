"""Concept tags of the hybrid space: mining them from training captions, the official files, and the soft multi-hot
training target (itr_video_methods §1.4, §1.9).

Files (LiJiaBei-7/rivrl:util/get_concept_tags.py): ``TextData/tags/video_label_th_1.txt`` holds one line per video,
``<videoid>\\t<tag>:<count> <tag>:<count> ...`` (counts in decreasing order, only counts > 1, > 0 for ids starting
with ``tgif``), and ``TextData/tags/video_label_th_1/tag_vocab_512.json`` the 512 tags of largest summed count
(``all_words.txt`` lists every tag with its count, ``tag_vocab_512.txt`` the vocabulary one per line).

Mining: each caption is cleaned (``[^A-Za-z0-9]`` -> space, lower-case), its nouns, verbs and adjectives are
lemmatised, NLTK's English stop words are dropped, and counts are summed per video. Upstream tags parts of speech
with NLTK's perceptron tagger and lemmatises with WordNet, whose data NLTK downloads at run time; here both come from
``lemminflect``'s lexicon, which ships its data (``pos_filter="lexicon"``): a word is kept if the lexicon lists it as
a noun, verb or adjective (its verb reading for ``-ing``/``-ed`` forms, else noun, verb, adjective in that order), an
out-of-lexicon word counts as a noun (the perceptron tagger's default for unknown words) and a number is dropped
(tagged ``CD``). ``pos_filter="none"`` keeps every word (upstream without ``--use_lemma``). Words are the
whitespace tokens of the cleaned caption (upstream's ``word_tokenize`` also splits contractions such as ``cannot``),
and a video's words start at its first caption (upstream registers a video at its caption ``#0``).

Target (util/tag_data_provider.py:156-222): the counts of a video divided by the largest count listed for it
*before* keeping the vocabulary's tags, so a target may have no entry equal to 1; a video without tags gets zeros.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.extras import BoundExtra, Extra
from leccr_lightning.data.video.vocabulary import clean_words
from leccr_lightning.data.visualsearch import CaptionFile, visual_id_of

# NLTK's English stop-word list (nltk_data corpora/stopwords/english, 179 words), used by get_concept_tags.py:17.
NLTK_ENGLISH_STOP_WORDS = frozenset(
    [
        "i",
        "me",
        "my",
        "myself",
        "we",
        "our",
        "ours",
        "ourselves",
        "you",
        "you're",
        "you've",
        "you'll",
        "you'd",
        "your",
        "yours",
        "yourself",
        "yourselves",
        "he",
        "him",
        "his",
        "himself",
        "she",
        "she's",
        "her",
        "hers",
        "herself",
        "it",
        "it's",
        "its",
        "itself",
        "they",
        "them",
        "their",
        "theirs",
        "themselves",
        "what",
        "which",
        "who",
        "whom",
        "this",
        "that",
        "that'll",
        "these",
        "those",
        "am",
        "is",
        "are",
        "was",
        "were",
        "be",
        "been",
        "being",
        "have",
        "has",
        "had",
        "having",
        "do",
        "does",
        "did",
        "doing",
        "a",
        "an",
        "the",
        "and",
        "but",
        "if",
        "or",
        "because",
        "as",
        "until",
        "while",
        "of",
        "at",
        "by",
        "for",
        "with",
        "about",
        "against",
        "between",
        "into",
        "through",
        "during",
        "before",
        "after",
        "above",
        "below",
        "to",
        "from",
        "up",
        "down",
        "in",
        "out",
        "on",
        "off",
        "over",
        "under",
        "again",
        "further",
        "then",
        "once",
        "here",
        "there",
        "when",
        "where",
        "why",
        "how",
        "all",
        "any",
        "both",
        "each",
        "few",
        "more",
        "most",
        "other",
        "some",
        "such",
        "no",
        "nor",
        "not",
        "only",
        "own",
        "same",
        "so",
        "than",
        "too",
        "very",
        "s",
        "t",
        "can",
        "will",
        "just",
        "don",
        "don't",
        "should",
        "should've",
        "now",
        "d",
        "ll",
        "m",
        "o",
        "re",
        "ve",
        "y",
        "ain",
        "aren",
        "aren't",
        "couldn",
        "couldn't",
        "didn",
        "didn't",
        "doesn",
        "doesn't",
        "hadn",
        "hadn't",
        "hasn",
        "hasn't",
        "haven",
        "haven't",
        "isn",
        "isn't",
        "ma",
        "mightn",
        "mightn't",
        "mustn",
        "mustn't",
        "needn",
        "needn't",
        "shan",
        "shan't",
        "shouldn",
        "shouldn't",
        "wasn",
        "wasn't",
        "weren",
        "weren't",
        "won",
        "won't",
        "wouldn",
        "wouldn't",
    ]
)
POS_FILTERS = ("lexicon", "none")
TAG_FILE = "TextData/tags/video_label_th_1.txt"
TAG_VOCABULARY = "TextData/tags/video_label_th_1/tag_vocab_512.json"


def lexicon_lemma(word: str) -> str | None:
    """The lemma of ``word`` if the lexicon reads it as a noun, verb or adjective (None for other words)."""
    import lemminflect

    if word.isdigit():
        return None
    lemmas = lemminflect.getAllLemmas(word)
    if not lemmas:
        return word
    readings = {pos: forms for pos, forms in lemmas.items() if pos in ("NOUN", "VERB", "ADJ")}
    if not readings:
        return None
    if "VERB" in readings and word.endswith(("ing", "ed")):
        return readings["VERB"][0]
    for pos in ("NOUN", "VERB", "ADJ"):
        if pos in readings:
            return readings[pos][0]
    return None


def caption_concepts(text: str, pos_filter: str = "lexicon") -> list[str]:
    """The concept words of one caption: cleaned, filtered and lemmatised, stop words removed."""
    if pos_filter not in POS_FILTERS:
        raise ValueError(f"pos_filter: expected one of {POS_FILTERS}, got {pos_filter!r}")
    words = clean_words(text)
    if pos_filter == "lexicon":
        words = [lemma for lemma in map(lexicon_lemma, words) if lemma is not None]
    return [w for w in words if w not in NLTK_ENGLISH_STOP_WORDS]


def mine_concept_tags(
    captions: CaptionFile, threshold: int = 1, tgif_threshold: int = 0, pos_filter: str = "lexicon"
) -> dict[str, list[tuple[str, int]]]:
    """video id -> [(tag, count)] in decreasing count (ties in first-appearance order), counts > ``threshold``
    (> ``tgif_threshold`` for ids starting with ``tgif``); videos in order of first appearance."""
    words: dict[str, list[str]] = {}
    for parsed, text in zip(captions.parsed, captions.texts, strict=True):
        words.setdefault(parsed.visual_id, []).extend(caption_concepts(text, pos_filter))
    tags = {}
    for video, found in words.items():
        limit = tgif_threshold if video.startswith("tgif") else threshold
        tags[video] = [(w, c) for w, c in sorted(Counter(found).items(), key=lambda x: x[1], reverse=True) if c > limit]
    return tags


def tag_counts(video_tags: Mapping[str, Sequence[tuple[str, int]]]) -> list[tuple[str, int]]:
    """Every tag with its count summed over the videos, most common first (ties in first-appearance order)."""
    counts: Counter[str] = Counter()
    for tags in video_tags.values():
        for tag, count in tags:
            counts[tag] += count
    return counts.most_common()


def write_concept_tags(
    collection_dir: str | Path, video_tags: Mapping[str, Sequence[tuple[str, int]]], size: int = 512
):
    """Write the official tag files under ``<collection>/TextData/tags`` and return the tag vocabulary."""
    collection_dir = Path(collection_dir)
    tag_file = collection_dir / TAG_FILE
    vocab_dir = tag_file.with_suffix("")
    vocab_dir.mkdir(parents=True, exist_ok=True)
    with tag_file.open("w", encoding="utf-8") as handle:
        for video, tags in video_tags.items():
            handle.write(f"{video}\t" + "".join(f"{tag}:{count} " for tag, count in tags) + "\n")
    ranked = tag_counts(video_tags)
    (vocab_dir / "all_words.txt").write_text("\n".join(f"{t} {c}" for t, c in ranked), encoding="utf-8")
    vocabulary = [t for t, _ in ranked[:size]]
    (vocab_dir / f"tag_vocab_{size}.json").write_text(json.dumps(vocabulary), encoding="utf-8")
    (vocab_dir / f"tag_vocab_{size}.txt").write_text("\n".join(vocabulary), encoding="utf-8")
    return vocabulary


def read_tag_file(path: str | Path) -> dict[str, tuple[list[str], np.ndarray, int]]:
    """video id -> (tags, counts, line number) of a ``video_label_th_1.txt``; malformed lines name the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept tag file {path} does not exist (run `leccr tags`)")
    table: dict[str, tuple[list[str], np.ndarray, int]] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        video, _, entries = line.strip().partition("\t")
        video = visual_id_of(video.strip())
        tags, counts = [], []
        for entry in entries.split():
            tag, sep, count = entry.rpartition(":")
            try:
                value = float(count)
            except ValueError:
                value = -1.0
            if not sep or not tag or value <= 0:
                raise DataFormatError(path, line_no, f"tag entry {entry!r} of video {video}: expected <tag>:<count>")
            tags.append(tag)
            counts.append(value)
        if video in table:
            raise DataFormatError(path, line_no, f"video {video} repeats line {table[video][2]}")
        table[video] = (tags, np.asarray(counts, dtype=np.float64), line_no)
    return table


def read_tag_vocabulary(path: str | Path) -> list[str]:
    """The ordered tag list of a ``tag_vocab_<n>.json`` (strings, no repeats)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"tag vocabulary {path} does not exist (run `leccr tags`)")
    try:
        vocabulary = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFormatError(path, err.lineno, f"not JSON ({err.msg})") from err
    if not isinstance(vocabulary, list) or not all(isinstance(t, str) for t in vocabulary) or not vocabulary:
        raise DataFormatError(path, 0, "expected a non-empty JSON list of tag strings")
    if len(set(vocabulary)) != len(vocabulary):
        raise DataFormatError(path, 0, "the tag vocabulary repeats a tag")
    return vocabulary


class _BoundTags(BoundExtra):
    def __init__(self, targets: np.ndarray):
        self.targets = targets

    def batch(self, rows: np.ndarray) -> dict[str, torch.Tensor]:
        return {"values": torch.from_numpy(self.targets[np.asarray(rows)])}


class ConceptTags(Extra):
    """Soft multi-hot concept targets [B, |vocabulary|] of the split's videos (``batch["extras"][name]["values"]``).

    Training videos must each have a line and every line must name a training video (errors name the file, the
    line and the video); the targets of other splits are those of the videos the file lists, zeros elsewhere
    (they are read in training only). ``allow_missing``: a training video without a line gets zeros.
    """

    level = "item"

    def __init__(self, path: str = TAG_FILE, vocabulary: str = TAG_VOCABULARY, allow_missing: bool = False):
        self.path, self.vocabulary, self.allow_missing = path, vocabulary, allow_missing

    def vocabulary_size(self, collection_dir: Path) -> int:
        """Number of tags of the (training) tag vocabulary: the width of the targets."""
        return len(read_tag_vocabulary(self.resolve(collection_dir, self.vocabulary, "train")))

    def bind(self, collection_dir: Path, split: str, ids: Sequence[str], source: Path) -> BoundExtra:
        path = self.resolve(collection_dir, self.path, split)
        table = read_tag_file(path)
        vocabulary = read_tag_vocabulary(self.resolve(collection_dir, self.vocabulary, split))
        column = {tag: i for i, tag in enumerate(vocabulary)}
        position = {video: i for i, video in enumerate(ids)}
        if split == "train":
            for video, (_, _, line_no) in table.items():
                if video not in position:
                    raise DataFormatError(path, line_no, f"tag line for video {video}, which is not in {source}")
            if not self.allow_missing:
                missing = next((v for v in ids if v not in table), None)
                if missing is not None:
                    raise DataFormatError(path, missing, f"no tag line for training video {missing} of {source}")
        targets = np.zeros((len(ids), len(vocabulary)), dtype=np.float32)
        for video, (tags, counts, _) in table.items():
            row = position.get(video)
            if row is None or not tags:
                continue
            scores = counts / counts.max()
            for tag, score in zip(tags, scores, strict=True):
                if tag in column:
                    targets[row, column[tag]] = score
        return _BoundTags(targets)
