"""Caption files of the Dual Encoding collections: ``<capid> <text>`` per line, ``capid = <videoid>#...#<k>``.

The video id is the part before the first ``#`` with a trailing ``.jpg``/``.mp4`` removed
(LiJiaBei-7/rivrl:basic/util.py:92-96 ``getVideoId``); ``k`` is the last ``#`` field. Unlike the CCR release, the
middle field carries no language tag (MSR-VTT ids are ``video0#0``), so it is not checked.
"""

from __future__ import annotations

from pathlib import Path

from leccr_lightning.data.visualsearch import CaptionFile, CaptionId, read_caption_file, visual_id_of


def parse_video_caption_id(cap_id: str) -> CaptionId:
    """``<videoid>#...#<k>`` (the Dual Encoding ids: ``video7#0``, ``tgif_x#enc#3``) -> (video id, middle tag, k)."""
    parts = cap_id.split("#")
    if len(parts) < 2 or not parts[0] or not parts[-1]:
        raise ValueError(f"no caption id: expected '<video_id>#...#<k>', got {cap_id!r}")
    return CaptionId(visual_id_of(parts[0]), "#".join(parts[1:-1]), parts[-1])


def read_video_captions(path: str | Path) -> CaptionFile:
    """Read an English ``*.caption.txt`` (``read_caption_file`` with the video id grammar); a malformed line is an
    error naming the file and the line number."""
    return read_caption_file(path, parse_id=parse_video_caption_id)
