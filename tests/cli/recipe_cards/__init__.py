"""Recipe cards: what the official training scripts set, per method and dataset, as dotted config keys.

One module per method folder under ``configs/experiments/``. A card module defines

- ``METHOD``: the folder name (``configs/experiments/<METHOD>/``);
- ``SOURCES``: where the values come from (``repo:path:line`` of the official scripts, or the paper section);
- ``COMMON``: dotted key -> expected value, for every recipe of the method;
- ``RECIPES``: recipe stem -> dotted key -> expected value (added to ``COMMON``; an entry may override it).

Every recipe of a carded method (the ``tiny*`` CPU configs excepted) must have a card entry, and resolving it with
``--print_config`` must give the card's values (``tests/cli/test_recipe_cards.py``).
"""
