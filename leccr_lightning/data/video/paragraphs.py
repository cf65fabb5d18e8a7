"""Paragraph-to-video retrieval (DiDeMo, CLIP4Clip protocol): every caption of a video concatenated into one query."""

from __future__ import annotations

from pathlib import Path

from leccr_lightning.data.visualsearch import read_caption_file, write_caption_file


def write_paragraph_captions(source: str | Path, out: str | Path, separator: str = " ") -> Path:
    """Write one caption ``<video>#<tag>#0`` per video of ``source``: its captions in line order joined with
    ``separator`` (the tag of the video's first caption is kept). Returns ``out``."""
    captions = read_caption_file(source)
    paragraphs: dict[str, list[str]] = {}
    tags: dict[str, str] = {}
    for parsed, text in zip(captions.parsed, captions.texts, strict=True):
        paragraphs.setdefault(parsed.visual_id, []).append(text)
        tags.setdefault(parsed.visual_id, parsed.tag)
    write_caption_file(
        out, [(f"{video}#{tags[video]}#0", separator.join(texts)) for video, texts in paragraphs.items()]
    )
    return Path(out)
