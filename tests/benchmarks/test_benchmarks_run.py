"""Every benchmark script runs end to end at a small size and prints its goal lines (timings are not asserted: the
ratios belong to ``make bench``). A script broken by a change elsewhere (a method moved, a hook added) fails here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

pytestmark = pytest.mark.slow
SMALL_RUNS = {
    "eval_speed": ["--repeats", "1", "--dim", "64", "--shapes", "vatex"],
    "large_gallery": ["--queries", "200", "--gallery", "20000", "--dim", "32", "--ivf-train", "20000"],
    "train_overhead": ["--warmup", "1", "--steps", "3", "--repeats", "1"],
    "loss_kernels": ["--batch", "16", "--dim", "32", "--repeats", "2", "--sinkhorn-iterations", "5"],
    "loader_speed": ["--items", "200", "--dim", "16", "--repeats", "1"],
    "rouge_speed": ["--sizes", "coco1k", "--check-queries", "2"],
    "prota_scoring_memory": ["--texts", "40", "--videos", "40", "--tokens", "4", "--frames", "3", "--dim", "16"],
}


@pytest.mark.parametrize("script", sorted(SMALL_RUNS))
def test_benchmark_runs_and_reports(script: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, f"{script}.py", "--threads", "1", *SMALL_RUNS[script]],
        cwd=REPO / "benchmarks",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    assert "device: cpu" in done.stdout or script == "prota_scoring_memory", done.stdout[-2000:]
