"""A semi-real CCR collection: real Multi30K caption text, synthetic visual features tied to the English content.

The synthetic collection (``data/synthetic.py``) has a tiny vocabulary and word-by-word "translations", which flatters
methods that lean on the MT or on translate-test. This builder keeps its file layout (``LAYOUTS["synthetic"]``: the
tiny configs run on it unchanged) and replaces its text with the real captions of Multi30K task 1 and task 2
(``/work/shared/data/multi30k``, see its README), the one real text the project may read:

- items: ``n_train`` / ``n_val`` / ``n_test`` images drawn (seeded) from the task-1 train / val / test_2016_flickr
  splits; the visual id is the Flickr30K file stem;
- English source (``enc``): the image's task-1 English line, one caption per item;
- "MT" target (``enc2xx``): the task-1 human translation of that line, with the corruption of ``data/synthetic.py``:
  a fraction ``mt_noise`` of the captions are noisy (each word replaced by a random target-language content word or
  dropped, at rate ``noisy_word_rate``, half each; ids in ``MANIFEST.json``) and every caption gets light word noise
  ``mt_word_noise``; words are whitespace tokens of the real sentence;
- back-translation (``enc2xx2enc``): the English source corrupted at the rate its MT was corrupted (a back-translation
  carries the MT's errors; no real back-translation exists), then at ``back_word_noise``;
- val/test queries (``xx``): the human task-1 translations, clean; their English "MT" (``xx2enc``): the task-1 English
  line with light noise ``mt_word_noise``;
- descriptions/<id>.txt: the image's five task-2 English captions joined (an MLLM-description stand-in for LECCR).

Visual features: every English content word w (lower-cased ``[a-z]+`` tokens minus a stop-word list) has a fixed random
unit vector e_w in R^``feature_dim``, drawn from a generator seeded by (``seed``, crc32(w)), so a word keeps its vector
whatever the sizes. An item's feature is  f = normalise(mean of e_w over every content-word occurrence in its six
English captions, task 1 and task 2) + ``feature_noise`` * g / sqrt(D), g ~ N(0, I): objects mentioned by several
annotators weigh more, and the German query describes the same content as one of those captions.
"""

from __future__ import annotations

import gzip
import json
import re
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.features import write_bigfile
from leccr_lightning.data.layouts import LAYOUTS
from leccr_lightning.data.visualsearch import write_caption_file

SPLITS = {"train": ("train", "train"), "val": ("val", "val"), "test": ("test_2016_flickr", "test_2016")}
"""Our split -> (task-1 file stem, task-2 file stem)."""
TASK2_CAPTIONS = 5
LANGUAGES = ("de",)
_ENGLISH_WORD = re.compile(r"[a-z]+")
_PUNCTUATION = ".,;:!?\"'()"
# fmt: off
ENGLISH_STOPWORDS = frozenset(
    [
        "a", "an", "the", "and", "or", "but", "of", "in", "on", "at", "to", "from", "by", "with", "without", "for",
        "into", "onto", "over", "under", "near", "next", "beside", "behind", "above", "below", "around", "through",
        "while", "as", "is", "are", "was", "were", "be", "been", "being", "has", "have", "had", "do", "does", "did",
        "it", "its", "this", "that", "these", "those", "there", "here", "he", "she", "they", "him", "her", "them",
        "his", "their", "one", "two", "three", "four", "some", "several", "many", "other", "another", "each", "who",
        "which", "what", "up", "down", "out", "off", "very", "just", "also", "not", "no", "where", "than", "then", "so",
        "all", "both"
    ]
)
GERMAN_STOPWORDS = frozenset(
    [
        "ein", "eine", "einer", "eines", "einem", "einen", "der", "die", "das", "des", "dem", "den", "und", "oder",
        "aber", "in", "im", "auf", "an", "am", "zu", "zum", "zur", "von", "vom", "mit", "ohne", "für", "ins", "über",
        "unter", "neben", "hinter", "vor", "bei", "beim", "durch", "um", "als", "ist", "sind", "war", "waren", "wird",
        "werden", "hat", "haben", "sich", "es", "er", "sie", "ihr", "ihre", "ihren", "seine", "seinem", "seinen",
        "seiner", "dieser", "diese", "dieses", "zwei", "drei", "vier", "einige", "mehrere", "viele", "andere", "nach",
        "aus", "gegen", "während", "wie", "so", "auch", "nicht", "noch"
    ]
)
# fmt: on
STOPWORDS = {"de": GERMAN_STOPWORDS}


@dataclass
class SemiRealConfig:
    """Options of ``write_semireal_collection`` (sizes are numbers of images per split)."""

    language: str = "de"
    n_train: int = 500
    n_val: int = 100
    n_test: int = 100
    mt_noise: float = 0.0
    noisy_word_rate: float = 0.6
    mt_word_noise: float = 0.05
    back_word_noise: float = 0.1
    feature_dim: int = 64
    feature_noise: float = 0.5
    seed: int = 0


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Multi30K file {path} is missing (expected the multi30k/dataset layout)")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        lines = [line.rstrip("\n") for line in handle]
    for number, line in enumerate(lines, 1):
        if not line.strip():
            raise DataFormatError(path, f"line {number}", "empty caption")
    return lines


def _image_ids(path: Path, expected: int) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"Multi30K image split {path} is missing")
    names = path.read_text(encoding="utf-8").split()
    if len(names) != expected:
        raise DataFormatError(path, "", f"{len(names)} image names for {expected} caption lines")
    return [name.rsplit(".", 1)[0] for name in names]


def english_content_words(text: str) -> list[str]:
    """Lower-cased ``[a-z]+`` tokens of an English caption that are not stop words."""
    return [w for w in _ENGLISH_WORD.findall(text.lower()) if w not in ENGLISH_STOPWORDS]


def word_vector(word: str, dim: int, seed: int) -> np.ndarray:
    """The fixed random unit vector of a content word (generator seeded by (seed, crc32(word)))."""
    rng = np.random.default_rng([seed, zlib.crc32(word.encode("utf-8"))])
    vector = rng.standard_normal(dim)
    return vector / np.linalg.norm(vector)


class SemiRealWriter:
    """Reads the Multi30K text, draws the items and writes the collection in the synthetic layout."""

    def __init__(self, multi30k: str | Path, config: SemiRealConfig):
        if config.language not in LANGUAGES:
            raise ValueError(
                f"language: expected one of {LANGUAGES} (task-1 human translations), got {config.language}"
            )
        for name in ("mt_noise", "noisy_word_rate", "mt_word_noise", "back_word_noise"):
            if not 0.0 <= getattr(config, name) <= 1.0:
                raise ValueError(f"{name}: expected a value in [0, 1], got {getattr(config, name)}")
        self.root, self.config = Path(multi30k), config
        self.rng = np.random.default_rng(config.seed)
        self.noisy_ids: list[str] = []
        self.splits = {split: self._split(split) for split in SPLITS}
        stop = STOPWORDS[config.language]
        tokens = (w.strip(_PUNCTUATION) for item in self.splits["train"] for w in item["target"].split())
        self.target_words = sorted({w for w in tokens if w and w.lower() not in stop})
        self.english_words = sorted({w for item in self.splits["train"] for w in english_content_words(item["source"])})

    def _split(self, split: str) -> list[dict]:
        """The drawn items of one split: id, task-1 English and target line, task-2 English captions."""
        stem1, stem2 = SPLITS[split]
        task1, task2 = self.root / "task1", self.root / "task2"
        english = _read_lines(task1 / "raw" / f"{stem1}.en.gz")
        target = _read_lines(task1 / "raw" / f"{stem1}.{self.config.language}.gz")
        if len(target) != len(english):
            raise DataFormatError(task1 / "raw" / f"{stem1}.{self.config.language}.gz", "", "not line-aligned with en")
        ids = _image_ids(task1 / "image_splits" / f"{stem1}.txt", len(english))
        others = [_read_lines(task2 / "raw" / f"{stem2}.{k}.en.gz") for k in range(1, TASK2_CAPTIONS + 1)]
        other_ids = _image_ids(task2 / "image_splits" / f"{stem2}_images.txt", len(others[0]))
        row_of = {visual_id: row for row, visual_id in enumerate(other_ids)}
        count = getattr(self.config, f"n_{split}")
        if count > len(ids):
            raise ValueError(f"n_{split}: the {split} split has {len(ids)} images, asked for {count}")
        chosen = sorted(self.rng.choice(len(ids), count, replace=False))
        items = []
        for row in chosen:
            visual_id = ids[row]
            if visual_id not in row_of:
                raise DataFormatError(task2 / "image_splits" / f"{stem2}_images.txt", visual_id, "no task-2 captions")
            descriptions = [captions[row_of[visual_id]] for captions in others]
            items.append({"id": visual_id, "source": english[row], "target": target[row], "others": descriptions})
        return items

    def _corrupt(self, words: list[str], rate: float, vocabulary: list[str]) -> list[str]:
        """``data/synthetic.py``'s corruption: each word replaced by a random content word (rate / 2) or dropped
        (rate / 2); never an empty caption."""
        out = []
        for word in words:
            u = self.rng.random()
            if u < rate / 2:
                out.append(str(vocabulary[int(self.rng.integers(len(vocabulary)))]))
            elif u >= rate:
                out.append(word)
        return out or [str(vocabulary[int(self.rng.integers(len(vocabulary)))])]

    def _feature(self, item: dict) -> np.ndarray:
        config = self.config
        words = [w for text in (item["source"], *item["others"]) for w in english_content_words(text)]
        if not words:
            raise DataFormatError(self.root, item["id"], "no English content word in any caption")
        mean = np.mean([word_vector(w, config.feature_dim, config.seed) for w in words], axis=0)
        noise = self.rng.standard_normal(config.feature_dim) / np.sqrt(config.feature_dim)
        return mean / np.linalg.norm(mean) + config.feature_noise * noise

    def write(self, out: str | Path) -> Path:
        """Write the collection under ``out/synthetic`` and return that folder."""
        config, layout, xx = self.config, LAYOUTS["synthetic"], self.config.language
        folder = Path(out) / layout.collection
        names = layout.resolve(xx)
        text_dir = folder / "TextData"
        every = [item for split in SPLITS for item in self.splits[split]]
        write_bigfile(
            folder / layout.features, [item["id"] for item in every], np.stack([self._feature(i) for i in every])
        )
        for split, name in layout.id_list_names(xx).items():
            (folder / name).write_text("".join(f"{item['id']}\n" for item in self.splits[split]), encoding="utf-8")
        source, target, back = [], [], []
        for item in self.splits["train"]:
            cap_id = f"{item['id']}#enc#0"
            noisy = self.rng.random() < config.mt_noise
            rate = config.noisy_word_rate if noisy else config.mt_word_noise
            if noisy:
                self.noisy_ids.append(f"{item['id']}#enc2{xx}#0")
            source.append((cap_id, item["source"]))
            target.append(
                (f"{item['id']}#enc2{xx}#0", " ".join(self._corrupt(item["target"].split(), rate, self.target_words)))
            )
            english = self._corrupt(item["source"].split(), rate, self.english_words)
            back.append(
                (
                    f"{item['id']}#enc2{xx}2enc#0",
                    " ".join(self._corrupt(english, config.back_word_noise, self.english_words)),
                )
            )
        for role, captions in (("source", source), ("target", target), ("back", back)):
            write_caption_file(text_dir / names["train"][role], captions)
        for split in ("val", "test"):
            items = self.splits[split]
            write_caption_file(text_dir / names[split]["query"], [(f"{i['id']}#{xx}#0", i["target"]) for i in items])
            translated = [
                (
                    f"{i['id']}#{xx}2enc#0",
                    " ".join(self._corrupt(i["source"].split(), config.mt_word_noise, self.english_words)),
                )
                for i in items
            ]
            write_caption_file(text_dir / names[split]["translated"], translated)
        (folder / "descriptions").mkdir(parents=True, exist_ok=True)
        for item in every:
            (folder / "descriptions" / f"{item['id']}.txt").write_text(
                " ".join(item["others"]) + "\n", encoding="utf-8"
            )
        manifest = {
            "config": asdict(config),
            "source": str(self.root),
            "collection": layout.collection,
            "noisy_translations": self.noisy_ids,
            "items": {split: [item["id"] for item in items] for split, items in self.splits.items()},
        }
        (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False), encoding="utf-8")
        return folder


def write_semireal_collection(multi30k: str | Path, out: str | Path, config: SemiRealConfig | None = None) -> Path:
    """Write a semi-real collection from the Multi30K folder ``multi30k`` under ``out`` (the VisualSearch root, as
    ``leccr synth``) and return its collection folder."""
    return SemiRealWriter(multi30k, config or SemiRealConfig()).write(out)
