"""Every paper recipe resolves to its recipe card: each card module under ``tests/cli/recipe_cards/`` names a method
folder; all of that folder's recipes (found by glob, ``tiny*`` excepted) must have a card entry, resolve with
``--print_config`` and carry the card's values, and be a short delta on the method's preset."""

from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path

import pytest

import tests.cli.recipe_cards as cards_package
from tests.helpers import EXPERIMENTS, dotted, resolved_config

MAX_RECIPE_LINES = 15


def card_modules() -> list:
    return [
        importlib.import_module(f"{cards_package.__name__}.{info.name}")
        for info in pkgutil.iter_modules(cards_package.__path__)
    ]


def paper_recipes(method: str) -> list[Path]:
    return sorted(p for p in (EXPERIMENTS / method).glob("*.yaml") if not p.stem.startswith("tiny"))


CASES = [
    pytest.param(card, recipe, id=f"{card.METHOD}-{recipe.stem}")
    for card in card_modules()
    for recipe in paper_recipes(card.METHOD)
]


@pytest.mark.parametrize("card", card_modules(), ids=lambda card: card.METHOD)
def test_every_recipe_of_a_carded_method_has_a_card_entry(card) -> None:
    found = {p.stem for p in paper_recipes(card.METHOD)}
    assert found, f"configs/experiments/{card.METHOD}/ holds no recipe"
    assert found == set(card.RECIPES), (
        f"recipes without a card entry: {sorted(found - set(card.RECIPES))}; "
        f"card entries without a recipe: {sorted(set(card.RECIPES) - found)}"
    )
    assert card.SOURCES, f"the {card.METHOD} card cites no official source"


@pytest.mark.parametrize(("card", "recipe"), CASES)
def test_recipe_resolves_to_its_card(card, recipe: Path) -> None:
    config = resolved_config(recipe)
    expected = {**card.COMMON, **card.RECIPES[recipe.stem]}
    wrong = {}
    for key, value in expected.items():
        actual = dotted(config, key)
        same = actual == pytest.approx(value) if isinstance(value, float) else actual == value
        if not same:
            wrong[key] = (actual, value)
    assert not wrong, f"{recipe}: (resolved, card) differ at {wrong}"


@pytest.mark.parametrize(("card", "recipe"), CASES)
def test_recipe_is_a_short_delta_on_its_preset(card, recipe: Path) -> None:
    lines = [
        line
        for line in recipe.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert len(lines) <= MAX_RECIPE_LINES, (
        f"{recipe} has {len(lines)} config lines (a recipe changes only what the paper changes)"
    )


def test_every_method_folder_has_a_recipe_card() -> None:
    carded = {card.METHOD for card in card_modules()}
    folders = {path.name for path in EXPERIMENTS.iterdir() if path.is_dir()}
    assert folders <= carded, f"method folders without a recipe card: {sorted(folders - carded)}"
