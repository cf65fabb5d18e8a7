"""The ``leccr`` front door: ``--help`` lists every subcommand and tool with a description, every tool option has
help text, and ``leccr synth`` takes lists the way its docstring writes them (``--languages de fr``)."""

from __future__ import annotations

import json
from importlib import import_module

import pytest

from leccr_lightning.cli import LIGHTNING_SUBCOMMANDS, main
from leccr_lightning.data.visualsearch import read_caption_file
from leccr_lightning.tools import TOOL_ENTRY_POINTS, tool_summary
from tests.helpers import REPO


def test_help_lists_subcommands_and_tools_with_one_line_each(capsys):
    main(["--help"])
    printed = capsys.readouterr().out
    for name in [*LIGHTNING_SUBCOMMANDS, *TOOL_ENTRY_POINTS]:
        (line,) = [line for line in printed.splitlines() if line.split()[:1] == [name]]
        assert len(line.split()) > 3, line
    assert "translate  machine-translate caption files with a local Hugging Face seq2seq model" in printed
    assert tool_summary("report") == "one table (mean ± std over seeds) and PNG plots from the folders of finished runs"
    with pytest.raises(SystemExit) as exit_info:
        main([])
    assert exit_info.value.code == 2 and "usage: leccr <command>" in capsys.readouterr().err


def test_every_tool_option_has_help_text(capsys):
    with_parser = set()
    for name, entry in TOOL_ENTRY_POINTS.items():
        module = import_module(entry.split(":")[0])
        if not hasattr(module, "build_parser"):
            continue
        with_parser.add(name)
        parser = module.build_parser()
        missing = [action.dest for action in parser._actions if action.dest != "help" and not action.help]
        assert not missing, f"leccr {name}: options without help {missing}"
    assert {"synth", "translate", "embed", "index", "search", "report", "describe", "extract"} <= with_parser
    with pytest.raises(SystemExit) as exit_info:
        main(["translate", "--help"])
    assert exit_info.value.code == 0 and "--max_captions" in capsys.readouterr().out


def test_synth_takes_several_languages_and_pairs(tmp_path):
    main(["synth", "--out", str(tmp_path), "--languages", "de", "fr", "--n_train", "8", "--n_val", "4", "--n_test",
          "4", "--concepts_per_item", "2", "3", "--video", "true"])  # fmt: skip
    folder = tmp_path / "synthetic"
    config = json.loads((folder / "MANIFEST.json").read_text(encoding="utf-8"))["config"]
    assert config["languages"] == ["de", "fr"] and config["concepts_per_item"] == [2, 3] and config["video"]
    for language in ("de", "fr"):
        assert read_caption_file(folder / "TextData" / f"synthtest_{language}.caption.txt", expected_tag=language)
        assert read_caption_file(folder / "TextData" / f"synthtrain_google_enc2{language}.caption.txt")
    assert (folder / "FeatureData" / "synthetic_feat" / "video2frames.txt").is_file()
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(tmp_path / "x"), "--languages", "de", "xx"])


TINY_CONFIGS = sorted((REPO / "configs/experiments").glob("*/tiny*.yaml"))


@pytest.mark.parametrize("config", TINY_CONFIGS, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_synth_knows_what_every_tiny_experiment_reads(config) -> None:
    from leccr_lightning.tools.synth import collection_for_experiment

    task, root, implied = collection_for_experiment(config)
    assert task in ("retrieval", "grounding") and str(root).startswith("data/")
    assert task == "grounding" or implied["layout"] in ("synthetic", "synthvideo")


def test_synth_config_writes_once_and_refuses_a_different_collection(tmp_path, capsys) -> None:
    from leccr_lightning.cli import main

    main(
        [
            "synth",
            "--config",
            str(REPO / "configs/experiments/baseline/tiny.yaml"),
            "--out",
            str(tmp_path),
            "--n_train",
            "12",
        ]
    )
    manifest = tmp_path / "synthetic" / "MANIFEST.json"
    written = manifest.stat().st_mtime_ns
    main(["synth", "--config", str(REPO / "configs/experiments/baseline/tiny.yaml"), "--out", str(tmp_path)])
    assert manifest.stat().st_mtime_ns == written  # already there: left alone
    with pytest.raises(ValueError, match="write_images"):
        main(["synth", "--config", str(REPO / "configs/experiments/leccr/tiny_images.yaml"), "--out", str(tmp_path)])
    main(["synth", "--config", str(REPO / "configs/experiments/moment_detr/tiny.yaml"), "--out", str(tmp_path / "g")])
    assert (tmp_path / "g" / "annotations").is_dir()
