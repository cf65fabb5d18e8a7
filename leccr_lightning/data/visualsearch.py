"""The NRCCR/LECCR "VisualSearch" text layout: caption files, caption ids and id lists.

Spec: ccr_methods §1.1-§1.3. A caption line is ``<visual_id>#<tag>#<k> <text>`` (split on the first space), UTF-8;
the visual id is the part before the first ``#`` with a trailing ``.jpg``/``.mp4`` removed (NRCCR ``getVideoId``).
Tags: ``enc`` (human English), ``enc2xx`` (MT of English into xx), ``enc2xx2enc`` (back-translation), ``xx`` (human
target-language caption) and ``xx2enc`` (MT of the human xx caption into English).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from leccr_lightning.data.errors import DataFormatError

TARGET_LANGUAGES = ("de", "fr", "cs", "ja", "zh")
_VISUAL_SUFFIXES = (".jpg", ".mp4")
_LANG = "|".join(TARGET_LANGUAGES)
_ENGLISH_TAGS = re.compile(rf"^(?:enc|enc2(?:{_LANG})2enc|(?:{_LANG})2enc|(?:{_LANG})c2en)$")
_TARGET_TAGS = re.compile(rf"^(?:enc2)?({_LANG})$")


@dataclass(frozen=True)
class CaptionId:
    """A parsed caption id ``<visual_id>#<tag>#<k>``."""

    visual_id: str
    tag: str
    index: str

    def with_tag(self, tag: str) -> str:
        """The id of the aligned caption under another tag (same visual item and index)."""
        return f"{self.visual_id}#{tag}#{self.index}"


def visual_id_of(raw_visual_id: str) -> str:
    """Strip a trailing ``.jpg``/``.mp4`` from a visual id, as the official loaders do."""
    for suffix in _VISUAL_SUFFIXES:
        if raw_visual_id.endswith(suffix):
            return raw_visual_id[: -len(suffix)]
    return raw_visual_id


def tag_language(tag: str) -> str:
    """The language a caption under ``tag`` is written in: ``enc``, ``enc2xx2enc`` and ``xx2enc`` are English."""
    if _ENGLISH_TAGS.match(tag):
        return "en"
    match = _TARGET_TAGS.match(tag)
    if match is None:
        raise ValueError(
            f"unknown caption tag {tag!r}: expected enc, enc2xx, enc2xx2enc, xx or xx2enc "
            f"with xx one of {', '.join(TARGET_LANGUAGES)}"
        )
    return match.group(1)


def parse_caption_id(cap_id: str) -> CaptionId:
    """Split ``<visual_id>#<tag>#<k>``; raise ``ValueError`` for anything else."""
    parts = cap_id.split("#")
    if len(parts) != 3 or not all(parts):
        raise ValueError(f"caption id {cap_id!r} is not of the form <visual_id>#<tag>#<k>")
    raw_visual, tag, index = parts
    tag_language(tag)
    return CaptionId(visual_id_of(raw_visual), tag, index)


@dataclass(frozen=True)
class CaptionFile:
    """The captions of one file in line order, with their parsed ids."""

    path: Path
    ids: tuple[str, ...]
    texts: tuple[str, ...]
    parsed: tuple[CaptionId, ...]

    def __len__(self) -> int:
        return len(self.ids)

    def as_dict(self) -> dict[str, str]:
        """Caption id -> text."""
        return dict(zip(self.ids, self.texts, strict=True))

    @property
    def visual_ids(self) -> list[str]:
        """The visual item of every line, in line order."""
        return [p.visual_id for p in self.parsed]

    def unique_visual_ids(self) -> list[str]:
        """The visual items in order of first appearance (the gallery order of a video collection)."""
        return list(dict.fromkeys(self.visual_ids))


def read_caption_file(
    path: str | Path,
    expected_tag: str | None = None,
    parse_id: Callable[[str], CaptionId] | None = None,
) -> CaptionFile:
    """Read a ``*.caption.txt`` file; every malformed line is an error naming the file and line number.

    Checks: UTF-8 decodable, ``id text`` with a non-empty text, a well-formed id (``parse_id``, default the CCR grammar
    ``parse_caption_id``; it raises ValueError on a malformed id), the id's tag equal to ``expected_tag`` when given,
    and no duplicate ids.
    """
    parse_id = parse_id or parse_caption_id
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"caption file {path} does not exist")
    ids: list[str] = []
    texts: list[str] = []
    parsed: list[CaptionId] = []
    seen: dict[str, int] = {}
    with path.open("rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise DataFormatError(path, line_no, f"bytes that are not UTF-8 ({err.reason})") from err
            if not line.strip():
                continue
            cap_id, _, text = line.partition(" ")
            if "#" not in cap_id:
                raise DataFormatError(
                    path,
                    line_no,
                    f"no caption id: expected '<visual_id>#<tag>#<k> <text>', got {line[:60]!r}",
                )
            try:
                cid = parse_id(cap_id)
            except ValueError as err:
                raise DataFormatError(path, line_no, str(err)) from err
            if expected_tag is not None and cid.tag != expected_tag:
                raise DataFormatError(path, line_no, f"caption {cap_id} has tag {cid.tag!r}, expected {expected_tag!r}")
            if not text.strip():
                raise DataFormatError(path, line_no, f"caption {cap_id} has an empty text")
            if cap_id in seen:
                raise DataFormatError(path, line_no, f"caption id {cap_id} repeats line {seen[cap_id]}")
            seen[cap_id] = line_no
            ids.append(cap_id)
            texts.append(text.strip())
            parsed.append(cid)
    if not ids:
        raise DataFormatError(path, 0, "the file holds no captions")
    return CaptionFile(path, tuple(ids), tuple(texts), tuple(parsed))


def read_id_list(path: str | Path) -> list[str]:
    """One visual id per line (first whitespace field, so MSCOCO's ``<id> <file>`` lines also work); no repeats."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"id list {path} does not exist")
    ids: list[str] = []
    seen: dict[str, int] = {}
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        visual_id = visual_id_of(line.split()[0])
        if visual_id in seen:
            raise DataFormatError(path, line_no, f"visual id {visual_id} repeats line {seen[visual_id]}")
        seen[visual_id] = line_no
        ids.append(visual_id)
    if not ids:
        raise DataFormatError(path, 0, "the id list is empty")
    return ids


def write_caption_file(path: str | Path, captions: list[tuple[str, str]]) -> None:
    """Write ``(cap_id, text)`` pairs in the official line format."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for cap_id, text in captions:
            handle.write(f"{cap_id} {text}\n")
