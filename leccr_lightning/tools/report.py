"""``leccr report``: one table (mean ± std over seeds) and PNG plots from the folders of finished runs.

Every ``test_metrics.json`` under the given folders is a run; the ``config.yaml`` LightningCLI wrote beside it names
the method (``model.class_path``), the data set (collection and language, or the DataModule and its root folder)
and the seed. Runs whose configs differ only in seeds and output paths are one setting; settings that share a method
and data set are told apart by the config values that differ. The table (markdown on stdout and in ``report.md``,
numbers in ``report.csv``) gives each setting's mean ± sample standard deviation over its seeds. Plots in ``--out``:

* ``recall_at_k.png``: recall@K curves of every run (``ranks.json`` of ``callbacks.ranks.RankWriter``; runs without
  it show their R@K points);
* ``rank_histogram.png``: the t2v rank histogram of every setting (seeds pooled; needs ``ranks.json``);
* ``sumr.png``: SumR per setting as bars (± std, every seed a dot);
* ``dcot_confidence.png``: DCOT confidences of clean vs corrupted MT pairs (``confidences.json`` of
  ``ConfidenceWriter``; the corrupted ids come from the synthetic collection's ``MANIFEST.json``);
* ``grounding_r1_iou.png``: moment retrieval R1@IoU against the IoU threshold of every grounding run.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from jsonargparse import ArgumentParser

from leccr_lightning.callbacks.plots import (
    confidence_figure,
    r1_iou_figure,
    rank_histogram_figure,
    recall_figure,
    sumr_figure,
)

RETRIEVAL_KEYS = ("t2v_r1", "t2v_r5", "t2v_r10", "v2t_r1", "v2t_r5", "v2t_r10", "sumr")
GROUNDING_KEYS = ("MR-full-R1@0.5", "MR-full-R1@0.7", "MR-full-mAP", "MR-full-mIoU")
R1_IOU = re.compile(r"^MR-full-R1@(\d+(?:\.\d+)?)$")
NOT_A_SETTING = re.compile(
    r"(^|\.)(seed_everything|shuffle_seed|seed|ckpt_path|test_after_fit|default_root_dir|enable_progress_bar|"
    r"enable_model_summary)$|^trainer\.(logger|callbacks)(\.|$)"
)
"""Config keys that vary between seeds or output places of one setting."""


@dataclass
class Run:
    """One finished run: its folder, test metrics (without the ``test/`` prefix) and config."""

    folder: Path
    metrics: dict[str, float]
    config: dict
    ranks: dict | None = None
    confidences: dict | None = None

    @property
    def seed(self):
        return self.config.get("seed_everything")

    @property
    def method(self) -> str:
        return str(self.config.get("model", {}).get("class_path", "?")).rsplit(".", 1)[-1]

    @property
    def data_args(self) -> dict:
        return self.config.get("data", {}).get("init_args", {}) or {}

    def collection_manifest(self) -> dict:
        """The synthetic collection's ``MANIFEST.json`` (``{}`` for real data)."""
        args = self.data_args
        if "root" not in args or "collection" not in args:
            return {}
        path = Path(args["root"]) / args["collection"] / "MANIFEST.json"
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}

    @property
    def dataset(self) -> str:
        args = self.data_args
        if "collection" in args:
            label = f"{args['collection']}-{args.get('language', '?')}"
            noise = self.collection_manifest().get("config", {}).get("mt_noise", 0.0)
            return f"{label} (MT noise {noise:g})" if noise else label
        data_class = str(self.config.get("data", {}).get("class_path", "?")).rsplit(".", 1)[-1]
        return f"{data_class} {Path(str(args.get('root', ''))).name}".strip()

    @property
    def setting(self) -> tuple:
        return tuple(sorted((k, v) for k, v in flatten(self.config).items() if not NOT_A_SETTING.search(k)))


@dataclass
class Setting:
    """Runs of one config over seeds."""

    label: str
    runs: list[Run] = field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [run.metrics[key] for run in self.runs if key in run.metrics]


def flatten(config, prefix: str = "") -> dict[str, str]:
    """Dotted keys -> JSON text of the leaves of a nested config."""
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: json.dumps(config, sort_keys=True)}


def find_runs(folders: Sequence[str | Path]) -> list[Run]:
    """Every run (``test_metrics.json`` + ``config.yaml``) under ``folders``, with its optional ranks/confidences."""
    runs = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"run folder {folder} does not exist")
        found = sorted(folder.rglob("test_metrics.json"))
        if not found:
            raise FileNotFoundError(f"no test_metrics.json under {folder} (run `leccr test` or fit --test_after_fit)")
        for metrics_file in found:
            config_file = metrics_file.with_name("config.yaml")
            if not config_file.is_file():
                raise FileNotFoundError(f"{metrics_file} has no config.yaml beside it (LightningCLI writes one)")
            metrics = json.loads(metrics_file.read_text(encoding="utf-8"))
            run = Run(
                metrics_file.parent,
                {k.removeprefix("test/"): float(v) for k, v in metrics.items()},
                yaml.safe_load(config_file.read_text(encoding="utf-8")),
            )
            for name in ("ranks", "confidences"):
                path = metrics_file.with_name(f"{name}.json")
                if path.is_file():
                    setattr(run, name, json.loads(path.read_text(encoding="utf-8")))
            runs.append(run)
    return runs


def _short(key: str, value: str | None) -> str:
    """``model.init_args.objective.class_path=".../DCOTObjective"`` -> ``objective=DCOTObjective`` (``null`` when the
    key is absent)."""
    parts = key.split(".")
    value = None if value is None else json.loads(value)
    if parts[-1] == "class_path" and len(parts) > 1:
        return f"{parts[-2]}={'null' if value is None else str(value).rsplit('.', 1)[-1]}"
    return f"{parts[-1]}={json.dumps(value) if value is None or isinstance(value, bool) else value}"


def _distinguishing(mine: dict, twins: list[dict]) -> list[str]:
    """The config keys whose value differs between ``mine`` and some twin, without the arguments of a class that
    differs itself."""
    keys = sorted({k for config in (mine, *twins) for k in config})
    differing = [k for k in keys if any(twin.get(k) != mine.get(k) for twin in twins)]
    classes = [k.removesuffix("class_path") for k in differing if k.endswith(".class_path")]
    return [k for k in differing if not any(k.startswith(c + "init_args.") for c in classes)]


def group_settings(runs: list[Run]) -> list[Setting]:
    """Runs grouped by setting, labelled ``method / data set`` (+ the config values that tell equal labels apart)."""
    by_setting: dict[tuple, list[Run]] = {}
    for run in runs:
        by_setting.setdefault(run.setting, []).append(run)
    base_labels = {key: f"{group[0].method} / {group[0].dataset}" for key, group in by_setting.items()}
    settings = []
    for key, group in by_setting.items():
        label = base_labels[key]
        twins = [other for other, other_label in base_labels.items() if other_label == label and other != key]
        if twins:
            mine = dict(key)
            shown = [_short(k, mine.get(k)) for k in _distinguishing(mine, [dict(t) for t in twins])[:3]]
            label += " [" + (", ".join(shown) or f"#{len(settings)}") + "]"
        settings.append(Setting(label, sorted(group, key=lambda r: (str(r.seed), str(r.folder)))))
    return sorted(settings, key=lambda s: s.label)


def mean_std(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (ddof 1; ``None`` for a single value)."""
    array = np.asarray(values, dtype=np.float64)
    return float(array.mean()), (float(array.std(ddof=1)) if len(array) > 1 else None)


def table_rows(settings: list[Setting], keys: Sequence[str]) -> list[dict]:
    """One row per setting: label, seeds and (mean, std, n) of every key."""
    rows = []
    for setting in settings:
        row = {"setting": setting.label, "seeds": [r.seed for r in setting.runs], "metrics": {}}
        for key in keys:
            values = setting.values(key)
            if values:
                mean, std = mean_std(values)
                row["metrics"][key] = {"mean": mean, "std": std, "n": len(values)}
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], keys: Sequence[str], digits: int = 1) -> str:
    """The rows as a markdown table, ``mean ± std`` cells (mean alone for one seed, ``—`` when missing)."""

    def cell(stats: dict | None) -> str:
        if stats is None:
            return "—"
        if stats["std"] is None:
            return f"{stats['mean']:.{digits}f}"
        return f"{stats['mean']:.{digits}f} ± {stats['std']:.{digits}f}"

    lines = ["| setting | seeds | " + " | ".join(keys) + " |", "|---|---|" + "---|" * len(keys)]
    for row in rows:
        seeds = ",".join(str(s) for s in row["seeds"])
        lines.append(f"| {row['setting']} | {seeds} | " + " | ".join(cell(row["metrics"].get(k)) for k in keys) + " |")
    return "\n".join(lines)


def write_csv(path: Path, rows: list[dict], keys: Sequence[str]) -> None:
    """``setting, seeds, n`` and ``<key>_mean, <key>_std`` columns (std empty for one seed)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "seeds", "n", *(f"{k}_{s}" for k in keys for s in ("mean", "std"))])
        for row in rows:
            values = []
            for key in keys:
                stats = row["metrics"].get(key)
                values += ["", ""] if stats is None else [stats["mean"], "" if stats["std"] is None else stats["std"]]
            writer.writerow([row["setting"], " ".join(str(s) for s in row["seeds"]), len(row["seeds"]), *values])


def corrupted_source_ids(run: Run) -> set[str]:
    """Training caption ids (``#enc#``, the DCOT confidence keys) whose MT is corrupted in the synthetic MANIFEST."""
    noisy = run.collection_manifest().get("noisy_translations", [])
    return {re.sub(r"#enc2[a-z]+#", "#enc#", cap_id) for cap_id in noisy}


def write_plots(settings: list[Setting], out: Path, max_k: int) -> list[Path]:
    """The PNG plots that the runs have data for; returns their paths."""
    written = []

    def save(figure, name: str) -> None:
        path = out / name
        figure.savefig(path, dpi=110)
        written.append(path)

    runs = [(setting, run) for setting in settings for run in setting.runs]
    ranked = [(s, r) for s, r in runs if r.ranks is not None]
    if ranked:
        gallery = max(r.ranks["gallery_size"] for _, r in ranked)
        curves = {f"{s.label} (seed {r.seed})": {d: r.ranks[d]["ranks"] for d in ("t2v", "v2t")} for s, r in ranked}
        save(recall_figure(curves, min(max_k, gallery), "recall@K of every run"), "recall_at_k.png")
        pooled = {}
        for setting, run in ranked:
            pooled.setdefault(setting.label, []).extend(run.ranks["t2v"]["ranks"])
        save(
            rank_histogram_figure(pooled, gallery, "text-to-visual rank histogram (seeds pooled)"), "rank_histogram.png"
        )
    else:
        points = {
            f"{s.label} (seed {r.seed})": r.metrics for s, r in runs if any(k in r.metrics for k in RETRIEVAL_KEYS)
        }
        if points:
            save(recall_figure({}, max_k, "R@K of every run (no ranks.json)", points=points), "recall_at_k.png")
    with_sumr = [s for s in settings if s.values("sumr")]
    if with_sumr:
        save(sumr_figure([s.label for s in with_sumr], [s.values("sumr") for s in with_sumr]), "sumr.png")
    confidences = {}
    for setting in settings:
        clean, corrupted = [], []
        for run in setting.runs:
            if run.confidences is None:
                continue
            noisy = corrupted_source_ids(run)
            for cap_id, value in run.confidences["confidences"].items():
                (corrupted if cap_id in noisy else clean).append(value)
        if clean and corrupted:
            confidences[setting.label] = (clean, corrupted)
    if confidences:
        save(confidence_figure(confidences), "dcot_confidence.png")
    grounding = {}
    for setting, run in runs:
        found = sorted((float(m.group(1)), v) for k, v in run.metrics.items() if (m := R1_IOU.match(k)))
        if found:
            grounding[f"{setting.label} (seed {run.seed})"] = ([t for t, _ in found], [v for _, v in found])
    if grounding:
        save(r1_iou_figure(grounding), "grounding_r1_iou.png")
    return written


def default_keys(runs: list[Run]) -> list[str]:
    """The retrieval and grounding keys that some run reports."""
    present = {k for run in runs for k in run.metrics}
    return [k for k in (*RETRIEVAL_KEYS, *GROUNDING_KEYS) if k in present]


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="leccr report", description=__doc__)
    parser.add_argument("runs", nargs="+", help="run folders (searched recursively for test_metrics.json)")
    parser.add_argument("--out", default="report", help="folder of report.md, report.csv and the PNG plots")
    parser.add_argument("--metrics", nargs="+", default=None, help="metric keys of the table; null: the usual ones")
    parser.add_argument("--max_k", type=int, default=100, help="largest K of the recall@K curves")
    parser.add_argument("--digits", type=int, default=1, help="decimals in the markdown table")
    return parser


def report_main(argv: list[str]) -> dict:
    """Parse ``argv``, print the table and write report.md, report.csv and the plots; returns rows and plot paths."""
    cfg = build_parser().parse_args(argv)
    runs = find_runs(cfg.runs)
    settings = group_settings(runs)
    keys = list(cfg.metrics or default_keys(runs))
    rows = table_rows(settings, keys)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(rows, keys, cfg.digits)
    (out / "report.md").write_text(table + "\n", encoding="utf-8")
    write_csv(out / "report.csv", rows, keys)
    plots = write_plots(settings, out, cfg.max_k)
    print(table)
    print(f"\n{len(runs)} runs in {len(settings)} settings; wrote {out / 'report.md'}, {out / 'report.csv'}")
    for path in plots:
        print(f"  {path}")
    return {"rows": rows, "keys": keys, "plots": plots, "settings": settings}
