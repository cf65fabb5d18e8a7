"""``python -m leccr_lightning`` is the ``leccr`` command."""

from leccr_lightning.cli import main

main()
