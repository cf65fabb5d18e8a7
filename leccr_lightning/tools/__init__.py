"""Data tools of the ``leccr`` command (everything that is not a Lightning subcommand), imported on use."""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Callable
from importlib import import_module
from pathlib import Path

TOOL_ENTRY_POINTS = {
    "synth": "leccr_lightning.tools.synth:synth_main",
    "translate": "leccr_lightning.tools.translate:translate_main",
    "embed": "leccr_lightning.tools.embed:embed_main",
    "index": "leccr_lightning.tools.index:index_main",
    "search": "leccr_lightning.tools.search:search_main",
    "report": "leccr_lightning.tools.report:report_main",
    "describe": "leccr_lightning.tools.describe:describe_main",
    "extract": "leccr_lightning.tools.extract:extract_main",
    "anchors": "leccr_lightning.tools.anchors:anchors_main",
    "tags": "leccr_lightning.tools.tags:tags_main",
}

_TOOL_LEAD = re.compile(r"^``leccr [\w-]+``:\s*")


def load_tool(name: str) -> Callable[[list[str]], object]:
    """The ``main(argv)`` function of a tool."""
    module, function = TOOL_ENTRY_POINTS[name].split(":")
    return getattr(import_module(module), function)


def tool_summary(name: str) -> str:
    """The first sentence of a tool module's docstring without its ``leccr <name>``: lead, read from the source file
    (the module is not imported, so ``leccr --help`` stays fast)."""
    spec = importlib.util.find_spec(TOOL_ENTRY_POINTS[name].split(":")[0])
    if spec is None or spec.origin is None:
        raise ImportError(f"tool {name!r}: module {TOOL_ENTRY_POINTS[name]} not found")
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text(encoding="utf-8"))) or ""
    paragraph = " ".join(docstring.split("\n\n")[0].split())
    return _TOOL_LEAD.sub("", paragraph).split(". ")[0].rstrip(".").replace("``", "")
