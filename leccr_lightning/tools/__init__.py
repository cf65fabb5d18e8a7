"""Data tools of the ``leccr`` command (everything that is not a Lightning subcommand), imported on use."""

from __future__ import annotations

from collections.abc import Callable
from importlib import import_module

TOOL_ENTRY_POINTS = {
    "synth": "leccr_lightning.tools.synth:synth_main",
    "describe": "leccr_lightning.tools.describe:describe_main",
    "extract": "leccr_lightning.tools.extract:extract_main",
    "anchors": "leccr_lightning.tools.anchors:anchors_main",
    "tags": "leccr_lightning.tools.tags:tags_main",
}


def load_tool(name: str) -> Callable[[list[str]], object]:
    """The ``main(argv)`` function of a tool."""
    module, function = TOOL_ENTRY_POINTS[name].split(":")
    return getattr(import_module(module), function)
