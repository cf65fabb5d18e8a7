"""Caption files of the Dual Encoding collections: ``<capid> <text>`` per line, ``capid = <videoid>#...#<k>``.

The video id is the part before the first ``#`` with a trailing ``.jpg``/``.mp4`` removed
(LiJiaBei-7/rivrl:basic/util.py:92-96 ``getVideoId``); ``k`` is the last ``#`` field. Unlike the CCR release, the
middle field carries no language tag (MSR-VTT ids are ``video0#0``), so it is not checked.
"""

from __future__ import annotations

from pathlib import Path

from leccr_lightning.data.errors import DataFormatError
from leccr_lightning.data.visualsearch import CaptionFile, CaptionId, visual_id_of


def read_video_captions(path: str | Path) -> CaptionFile:
    """Read an English ``*.caption.txt``; a malformed line is an error naming the file and the line number.

    Checks: UTF-8, ``<videoid>#...#<k> <text>`` with a non-empty text, no duplicate ids.
    """
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
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as err:
                raise DataFormatError(path, line_no, f"bytes that are not UTF-8 ({err.reason})") from err
            if not line:
                continue
            cap_id, _, text = line.partition(" ")
            parts = cap_id.split("#")
            if len(parts) < 2 or not parts[0] or not parts[-1]:
                raise DataFormatError(
                    path, line_no, f"no caption id: expected '<video_id>#...#<k> <text>', got {line[:60]!r}"
                )
            if not text.strip():
                raise DataFormatError(path, line_no, f"caption {cap_id} has an empty text")
            if cap_id in seen:
                raise DataFormatError(path, line_no, f"caption id {cap_id} repeats line {seen[cap_id]}")
            seen[cap_id] = line_no
            ids.append(cap_id)
            texts.append(text.strip())
            parsed.append(CaptionId(visual_id_of(parts[0]), "#".join(parts[1:-1]), parts[-1]))
    if not ids:
        raise DataFormatError(path, 0, "the file holds no captions")
    return CaptionFile(path, tuple(ids), tuple(texts), tuple(parsed))
