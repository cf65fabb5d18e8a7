"""One error type for malformed data files, always naming the file and the line or id."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file that does not follow the expected format; the message names the file and the line or id."""

    def __init__(self, path: str | Path, where: int | str, problem: str) -> None:
        location = f"line {where}" if isinstance(where, int) and where > 0 else (f"id {where}" if where else "")
        prefix = f"{path}: {location}: " if location else f"{path}: "
        super().__init__(prefix + problem)
        self.path = Path(path)
        self.where = where
        self.problem = problem
