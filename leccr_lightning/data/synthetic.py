"""A tiny learnable CCR collection written in exactly the official VisualSearch layout.

Latent structure: ``n_concepts`` concepts, each with a random prototype vector and an English noun. A visual item is
a set of concepts; its feature (or each video frame) is a weighted sum of their prototypes plus Gaussian noise.
English captions mention a subset of the item's concepts. Each target language is a deterministic synthetic lexicon
(Latin syllables with diacritics, or unsegmented CJK characters for zh/ja) with its own word order. Machine
translations are word-by-word renderings of the English captions; a fraction ``mt_noise`` of them are *noisy* (words
replaced or dropped at rate ``noisy_word_rate``; their ids go to ``MANIFEST.json``), and every MT caption has light
word noise ``mt_word_noise``. Human target-language val/test captions are clean and written independently of the
English ones; back-translations and ``xx2enc`` translations are noisy. Each item gets an MLLM-style description that
mentions all its concepts. With ``write_images`` every image item is also rendered as a small picture
``images/<visual_id>.png`` (one coloured shape per concept, colour and shape fixed per concept, in a random cell of a
grid, plus pixel noise), for end-to-end training of an image backbone. Everything is deterministic for a seed (the
pictures draw from their own generator, so the other files do not change with ``write_images``). ``regions``,
``frame_tokens`` and ``frame_images`` add the video extras of ``data/video/synthetic.py`` (region shards, cached frame
tokens, frame pictures; images count as one-frame videos), from a generator of their own as well.

A ``monolingual`` layout (the Dual Encoding video collections, ``msrvtt10k`` ... ``synthvideo``) gets English captions
``<videoid>#<k>`` for every split, the concept tags mined from its training captions as ``leccr tags`` does, a
``word_dim``-d word2vec BigFile ``<root>/word2vec/flickr/vec500flickr30m`` and ``sentence_dim``-d caption features
``<root>/bert_extract/<name>_cap_feat.hdf5`` (a noisy sum of the mentioned concepts' random directions; ``name`` is
``msrvtt10k`` for every MSR-VTT split, as upstream reads it).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from leccr_lightning.data.features import write_bigfile
from leccr_lightning.data.layouts import LAYOUTS, Layout
from leccr_lightning.data.visualsearch import write_caption_file

_NOUNS = [
    "dog",
    "cat",
    "horse",
    "bird",
    "ball",
    "tree",
    "car",
    "boat",
    "bicycle",
    "child",
    "woman",
    "man",
    "guitar",
    "kite",
    "bench",
    "flower",
    "river",
    "mountain",
    "bridge",
    "train",
    "umbrella",
    "hat",
    "table",
    "chair",
    "lamp",
    "book",
    "phone",
    "cake",
    "apple",
    "fish",
    "sheep",
    "cow",
    "road",
]
_FILLERS = ("a", "the", "photo", "of", "with", "and", "near", "is", "there", "some")
_SYLLABLES = [
    "ka",
    "ri",
    "to",
    "mu",
    "se",
    "la",
    "no",
    "pe",
    "vi",
    "da",
    "ze",
    "ku",
    "ro",
    "mi",
    "sa",
    "te",
    "be",
    "go",
    "ha",
    "lu",
]
_DIACRITICS = {"de": "äöüß", "fr": "éèàç", "cs": "čřšž"}
_CJK_START = {"zh": 0x4E00, "ja": 0x3040}
_WORD_ORDER = {"de": "reverse_pairs", "fr": "noun_last", "cs": "same", "ja": "reverse", "zh": "same"}
_PALETTE = np.array(
    [[1, 0, 0], [0, 0.8, 0], [0, 0.2, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1], [1, 1, 1], [0, 0, 0]], dtype=np.float64
)
_SHAPES = ("square", "disc", "cross", "ring", "triangle")


@dataclass
class SynthConfig:
    """Options of ``leccr synth`` (sizes are numbers of visual items per split)."""

    languages: list[str] = field(default_factory=lambda: ["de"])
    layout: str = "synthetic"
    video: bool = False
    n_train: int = 300
    n_val: int = 60
    n_test: int = 60
    n_concepts: int = 24
    concepts_per_item: tuple[int, int] = (2, 4)
    captions_per_item: tuple[int, int] = (1, 3)
    feature_dim: int = 32
    feature_noise: float = 0.35
    frames: tuple[int, int] = (4, 8)
    mt_noise: float = 0.0
    noisy_word_rate: float = 0.6
    mt_word_noise: float = 0.05
    back_word_noise: float = 0.1
    write_images: bool = False
    image_size: int = 32
    image_noise: float = 0.05
    regions: bool = False
    regions_per_frame: int = 6
    region_absent: float = 0.3
    frame_tokens: bool = False
    frame_images: bool = False
    word_dim: int = 500
    sentence_dim: int = 1024
    tag_vocabulary_size: int = 512
    seed: int = 0


class Lexicon:
    """A deterministic synthetic vocabulary and word order for one target language."""

    def __init__(self, language: str, words: list[str], rng: np.random.Generator):
        self.language = language
        self.joiner = "" if language in _CJK_START else " "
        self.order = _WORD_ORDER.get(language, "same")
        self.table: dict[str, str] = {}
        used: set[str] = set()
        for word in words:
            candidate = self._new_word(rng)
            while candidate in used:
                candidate = self._new_word(rng)
            used.add(candidate)
            self.table[word] = candidate
        self.inverse = {v: k for k, v in self.table.items()}

    def _new_word(self, rng: np.random.Generator) -> str:
        if self.language in _CJK_START:
            start = _CJK_START[self.language]
            return "".join(chr(start + int(rng.integers(0, 80))) for _ in range(2))
        marks = _DIACRITICS.get(self.language, "")
        word = "".join(rng.choice(_SYLLABLES) for _ in range(int(rng.integers(2, 4))))
        if marks and rng.random() < 0.5:
            word += marks[int(rng.integers(0, len(marks)))]
        return word

    def reorder(self, words: list[str]) -> list[str]:
        """Apply the language's word order to an English word sequence."""
        if self.order == "reverse":
            return words[::-1]
        if self.order == "reverse_pairs":
            return [w for i in range(0, len(words), 2) for w in words[i : i + 2][::-1]]
        if self.order == "noun_last":
            return [w for w in words if w in _FILLERS] + [w for w in words if w not in _FILLERS]
        return list(words)

    def render(self, words: list[str]) -> str:
        return self.joiner.join(self.table[w] for w in self.reorder(words))


class SyntheticWriter:
    """Generates items, captions, features and descriptions, and writes them under a layout's file names."""

    def __init__(self, config: SynthConfig):
        self.config = config
        self.rng = np.random.default_rng(config.seed)
        if config.n_concepts > len(_NOUNS):
            raise ValueError(f"n_concepts must be at most {len(_NOUNS)}")
        if config.write_images and (config.video or LAYOUTS[config.layout].video):
            raise ValueError("write_images renders image collections only (video collections have frame features)")
        if config.write_images and config.image_size < 8:
            raise ValueError(f"image_size: expected at least 8 pixels, got {config.image_size}")
        self.nouns = _NOUNS[: config.n_concepts]
        self.prototypes = self._unit(self.rng.standard_normal((config.n_concepts, config.feature_dim)))
        vocabulary = list(self.nouns) + list(_FILLERS)
        self.lexicons = {xx: Lexicon(xx, vocabulary, self.rng) for xx in config.languages}
        self.noisy_ids: list[str] = []

    @staticmethod
    def _unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    def _concepts(self) -> list[int]:
        low, high = self.config.concepts_per_item
        return sorted(self.rng.choice(self.config.n_concepts, int(self.rng.integers(low, high + 1)), replace=False))

    def _feature(self, concepts: list[int], keep: float = 1.0) -> np.ndarray:
        weights = self.rng.uniform(0.7, 1.3, len(concepts)) * (self.rng.random(len(concepts)) < keep)
        vector = weights @ self.prototypes[concepts]
        return vector + self.config.feature_noise * self.rng.standard_normal(self.config.feature_dim)

    def _english(self, concepts: list[int]) -> list[str]:
        """An English word sequence mentioning one to three of the item's concepts."""
        n = int(self.rng.integers(1, min(3, len(concepts)) + 1))
        picked = self.rng.choice(concepts, n, replace=False)
        words = ["a", "photo", "of"] if self.rng.random() < 0.5 else ["there", "is"]
        for i, concept in enumerate(picked):
            if i:
                words.append(str(self.rng.choice(["and", "with", "near"])))
            words += [str(self.rng.choice(["a", "the", "some"])), self.nouns[concept]]
        return words

    def _corrupt(self, words: list[str], rate: float) -> list[str]:
        """Replace or drop each word with probability ``rate`` (half each); never return an empty caption."""
        out = []
        for word in words:
            u = self.rng.random()
            if u < rate / 2:
                out.append(str(self.rng.choice(self.nouns)))
            elif u >= rate:
                out.append(word)
        return out or [str(self.rng.choice(self.nouns))]

    def _items(self, prefix: str, count: int) -> dict[str, list[int]]:
        return {f"{prefix}{i:06d}": self._concepts() for i in range(count)}

    def _n_captions(self) -> int:
        low, high = self.config.captions_per_item
        return int(self.rng.integers(low, high + 1))

    def write(self, out: str | Path) -> Path:
        """Write the collection under ``out/<collection>`` and return that folder."""
        config = self.config
        layout: Layout = LAYOUTS[config.layout]
        folder = Path(out) / layout.collection
        text_dir = folder / "TextData"
        kind = "vid" if (config.video or layout.video) else "img"
        splits = {
            "train": self._items(f"{kind}tr", config.n_train),
            "val": self._items(f"{kind}va", config.n_val),
            "test": self._items(f"{kind}te", config.n_test),
        }
        self._write_features(folder / layout.features, splits, video=config.video or layout.video)
        if layout.monolingual:
            self._write_monolingual(Path(out), folder, layout, splits)
        else:
            for xx in config.languages:
                for split, name in layout.id_list_names(xx).items():
                    id_file = folder / name
                    id_file.parent.mkdir(parents=True, exist_ok=True)
                    id_file.write_text("".join(f"{v}\n" for v in splits[split]))
            self._write_train(text_dir, layout, splits["train"])
            for split in ("val", "test"):
                self._write_eval(text_dir, layout, split, splits[split])
        self._write_descriptions(folder / "descriptions", splits)
        if config.write_images:
            self._write_images(folder / "images", splits)
        if config.regions or config.frame_tokens or config.frame_images:
            from leccr_lightning.data.video.synthetic import write_video_extras

            write_video_extras(folder, splits, self.prototypes, config)
        manifest = {
            "config": asdict(config),
            "collection": layout.collection,
            "noisy_translations": self.noisy_ids,
            "items": {
                split: {v: [self.nouns[c] for c in cs] for v, cs in items.items()} for split, items in splits.items()
            },
        }
        (folder / "MANIFEST.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False))
        return folder

    def _write_features(self, path: Path, splits: dict[str, dict[str, list[int]]], video: bool) -> None:
        names: list[str] = []
        rows: list[np.ndarray] = []
        video2frames: dict[str, list[str]] = {}
        for items in splits.values():
            for visual_id, concepts in items.items():
                if not video:
                    names.append(visual_id)
                    rows.append(self._feature(concepts))
                    continue
                n_frames = int(self.rng.integers(self.config.frames[0], self.config.frames[1] + 1))
                video2frames[visual_id] = [f"{visual_id}_{f}" for f in range(n_frames)]
                for frame_id in video2frames[visual_id]:
                    names.append(frame_id)
                    rows.append(self._feature(concepts, keep=0.7))
        write_bigfile(path, names, np.stack(rows))
        if video:
            (path / "video2frames.txt").write_text(repr(video2frames))

    def _write_monolingual(self, root: Path, folder: Path, layout: Layout, splits: dict[str, dict[str, list[int]]]):
        """English captions of every split, mined concept tags, a word2vec BigFile and caption features."""
        import h5py

        from leccr_lightning.data.video.captions import read_video_captions
        from leccr_lightning.data.video.tags import mine_concept_tags, write_concept_tags

        config = self.config
        directions = self._unit(self.rng.standard_normal((config.n_concepts, config.sentence_dim)))
        sentences: dict[str, np.ndarray] = {}
        names = {"train": layout.train["source"], "val": layout.val["query"], "test": layout.test["query"]}
        for split, items in splits.items():
            captions = []
            for visual_id, concepts in items.items():
                for k in range(self._n_captions()):
                    words = self._english(concepts)
                    mentioned = [self.nouns.index(w) for w in words if w in self.nouns]
                    noise = self.rng.standard_normal(config.sentence_dim) / np.sqrt(config.sentence_dim)
                    sentences[f"{visual_id}#{k}"] = (directions[mentioned].sum(0) + noise).astype(np.float32)
                    captions.append((f"{visual_id}#{k}", " ".join(words)))
            write_caption_file(folder / "TextData" / names[split], captions)
        train = read_video_captions(folder / "TextData" / layout.train["source"])
        write_concept_tags(folder, mine_concept_tags(train), config.tag_vocabulary_size)
        words = list(self.nouns) + list(_FILLERS)
        write_bigfile(
            root / "word2vec" / "flickr" / "vec500flickr30m",
            words,
            self.rng.standard_normal((len(words), config.word_dim)).astype(np.float32),
        )
        name = "msrvtt10k" if "msrvtt10k" in layout.collection else layout.collection
        (root / "bert_extract").mkdir(parents=True, exist_ok=True)
        with h5py.File(root / "bert_extract" / f"{name}_cap_feat.hdf5", "w") as handle:
            for cap_id, vector in sentences.items():
                handle.create_dataset(cap_id, data=vector)

    def _write_train(self, text_dir: Path, layout: Layout, items: dict[str, list[int]]) -> None:
        english: list[tuple[str, list[str]]] = []
        for visual_id, concepts in items.items():
            english += [(f"{visual_id}#enc#{k}", self._english(concepts)) for k in range(self._n_captions())]
        names = layout.resolve(self.config.languages[0])["train"]
        write_caption_file(text_dir / names["source"], [(cid, " ".join(w)) for cid, w in english])
        for xx, lexicon in self.lexicons.items():
            names = layout.resolve(xx)["train"]
            target, back = [], []
            for cap_id, words in english:
                target_id = cap_id.replace("#enc#", f"#enc2{xx}#")
                noisy = self.rng.random() < self.config.mt_noise
                if noisy:
                    self.noisy_ids.append(target_id)
                mt_words = self._corrupt(words, self.config.noisy_word_rate if noisy else self.config.mt_word_noise)
                target.append((target_id, lexicon.render(mt_words)))
                back_words = self._corrupt(mt_words, self.config.back_word_noise)
                back.append((cap_id.replace("#enc#", f"#enc2{xx}2enc#"), " ".join(back_words)))
            write_caption_file(text_dir / names["target"], target)
            write_caption_file(text_dir / names["back"], back)

    def _write_eval(self, text_dir: Path, layout: Layout, split: str, items: dict[str, list[int]]) -> None:
        for xx, lexicon in self.lexicons.items():
            names = layout.resolve(xx)[split]
            human, translated = [], []
            for visual_id, concepts in items.items():
                for k in range(self._n_captions()):
                    words = self._english(concepts)
                    human.append((f"{visual_id}#{xx}#{k}", lexicon.render(words)))
                    translated.append(
                        (
                            f"{visual_id}#{xx}2enc#{k}",
                            " ".join(self._corrupt(words, self.config.mt_word_noise)),
                        )
                    )
            write_caption_file(text_dir / names["query"], human)
            write_caption_file(text_dir / names["translated"], translated)

    def _write_descriptions(self, folder: Path, splits: dict[str, dict[str, list[int]]]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for items in splits.values():
            for visual_id, concepts in items.items():
                objects = ", ".join(f"a {self.nouns[c]}" for c in concepts)
                (folder / f"{visual_id}.txt").write_text(f"the scene shows {objects} .\n", encoding="utf-8")

    def _write_images(self, folder: Path, splits: dict[str, dict[str, list[int]]]) -> None:
        """Render every item as ``<visual_id>.png`` from a generator of its own (seeded from ``seed``)."""
        from PIL import Image

        folder.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([self.config.seed, 1])
        for items in splits.values():
            for visual_id, concepts in items.items():
                picture = render_picture(concepts, self.config.image_size, self.config.image_noise, rng)
                Image.fromarray(np.round(picture * 255).astype(np.uint8)).save(folder / f"{visual_id}.png")


def shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, radius: float) -> np.ndarray:
    """Pixels of a shape of half-size ``radius`` centred at offset (0, 0); ``dx``/``dy`` are pixel offsets."""
    if shape == "square":
        return (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    if shape == "disc":
        return dx**2 + dy**2 <= radius**2
    if shape == "cross":
        bar = radius / 3
        return ((np.abs(dx) <= bar) & (np.abs(dy) <= radius)) | ((np.abs(dy) <= bar) & (np.abs(dx) <= radius))
    if shape == "ring":
        return ((radius / 2) ** 2 <= dx**2 + dy**2) & (dx**2 + dy**2 <= radius**2)
    return (np.abs(dy) <= radius) & (np.abs(dx) <= (dy + radius) / 2)


def render_picture(concepts: list[int], size: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """An RGB picture [size, size, 3] in [0, 1]: concept c is a ``_SHAPES[c // 8]`` shape of colour ``_PALETTE[c % 8]``
    in its own random cell of a g x g grid (g = ceil(sqrt(#concepts))), with jittered size, position and colour,
    on a grey background with Gaussian pixel noise of std ``noise``."""
    grid = int(np.ceil(np.sqrt(len(concepts))))
    cell = size / grid
    picture = np.full((size, size, 3), 0.5)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    cells = rng.permutation(grid * grid)[: len(concepts)]
    for concept, slot in zip(concepts, cells, strict=True):
        radius = cell * rng.uniform(0.28, 0.42)
        centre_y = (slot // grid + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - radius)
        centre_x = (slot % grid + 0.5) * cell + rng.uniform(-1, 1) * (cell / 2 - radius)
        mask = shape_mask(_SHAPES[(concept // len(_PALETTE)) % len(_SHAPES)], xs - centre_x, ys - centre_y, radius)
        colour = np.clip(_PALETTE[concept % len(_PALETTE)] + rng.normal(0, 0.06, 3), 0, 1)
        picture[mask] = colour
    return np.clip(picture + noise * rng.standard_normal(picture.shape), 0, 1)


def write_synthetic_collection(out: str | Path, config: SynthConfig | None = None) -> Path:
    """Write a synthetic collection under ``out`` (the VisualSearch root) and return its collection folder."""
    return SyntheticWriter(config or SynthConfig()).write(out)
