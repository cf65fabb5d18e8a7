"""Data tools of the ``leccr`` command (everything that is not a Lightning subcommand)."""

from leccr_lightning.tools.synth import synth_main

TOOLS = {"synth": synth_main}
