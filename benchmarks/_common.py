"""What every benchmark shares: the ``--device``/``--threads``/``--peak-tflops`` options, synchronised timing of
alternating calls, FLOP rates against the GPU's peak, peak memory above a baseline, and the goal lines.

Absolute times on a shared machine are noise, so every benchmark times its subject and its floor alternately in the
same process (A B A B ...) and prints the median of the paired ratios. On CUDA each timed call is bracketed by
``torch.cuda.synchronize()``; nothing inside a timed call waits for the GPU unless the subject itself does.
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch

PEAK_TFLOPS = (
    ("H200 NVL", 60.0, 417.5),
    ("H200", 67.0, 494.7),
    ("H100 NVL", 60.0, 417.5),
    ("H100 PCIe", 51.0, 378.0),
    ("H100", 67.0, 494.7),
    ("A100", 19.5, 156.0),
)
"""(device-name fragment, dense fp32 TFLOP/s, dense TF32 tensor-core TFLOP/s) from NVIDIA's H200, H100 and A100
datasheets (the sparsity figures halved); the first fragment found in ``torch.cuda.get_device_name()`` wins."""


def add_device_options(parser: argparse.ArgumentParser) -> None:
    """``--device`` (default cuda when available), ``--threads`` (CPU) and ``--peak-tflops`` (override the table)."""
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (the development machine has 2)")
    parser.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="the device's peak for the fp32 matmul precision in use; default: the table in benchmarks/_common.py "
        "for known GPUs (H200/H100/A100), none on CPU",
    )


def setup_device(args: argparse.Namespace) -> torch.device:
    """Apply the thread count, check the device and print what runs where; returns the device."""
    for variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[variable] = str(args.threads)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible to torch")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {args.threads} torch threads"
    peak = peak_tflops(device, args.peak_tflops)
    peak_text = f"{peak:g} TFLOP/s peak ({torch.get_float32_matmul_precision()} fp32 matmul)" if peak else "no peak"
    print(f"device: {device} ({name}); torch {torch.__version__}; {peak_text}; {cpu_pressure()}")
    return device


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    """The peak TFLOP/s for fp32 matmuls on ``device``: the override, else the table (TF32 when torch's fp32 matmul
    precision lets cuBLAS use tensor cores), else None."""
    if override is not None:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, fp32, tf32 in PEAK_TFLOPS:
        if fragment in name:
            return fp32 if torch.get_float32_matmul_precision() == "highest" else tf32
    return None


def cpu_pressure() -> str:
    """``/proc/pressure/cpu`` avg10 (how contended the CPUs were), when the kernel reports it."""
    path = Path("/proc/pressure/cpu")
    if not path.is_file():
        return "cpu pressure n/a"
    first = path.read_text().split("\n")[0]
    return "cpu pressure " + next(field for field in first.split() if field.startswith("avg10"))


def synchronize(device: torch.device) -> None:
    """Wait for queued GPU work (no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def alternate(
    calls: dict[str, Callable[[], object]], repeats: int, device: torch.device, warm_up: bool = True
) -> dict[str, list[float]]:
    """Seconds of each call, timed in turn ``repeats`` times (after one untimed warm-up call each if ``warm_up``)."""
    for call in calls.values() if warm_up else ():
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(numerator: list[float], denominator: list[float]) -> float:
    """Median of the per-repetition ratios (robust to a slow repetition that hit both)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))


def goal_line(label: str, value: float, goal: float, unit: str = "") -> str:
    """``label: value (goal <= goal) met|MISSED``."""
    verdict = "met" if value <= goal else "MISSED"
    return f"{label}: {value:.3f}{unit} (goal <= {goal:g}{unit}) {verdict}"


def rate(flops: float, seconds: float, peak: float | None) -> str:
    """``x.xx TFLOP/s`` and its share of ``peak`` when known."""
    tflops = flops / seconds / 1e12
    return f"{tflops:.3f} TFLOP/s" + (f" ({100 * tflops / peak:.1f}% of {peak:g})" if peak else "")


class PeakMemory:
    """Peak memory above the level at entry while the block runs: process RSS sampled every 5 ms (Linux
    ``/proc/self/statm``) and, on CUDA, ``torch.cuda.max_memory_allocated``."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.page = os.sysconf("SC_PAGE_SIZE")
        self.rss_above = 0
        self.cuda_above = 0
        self._stop = threading.Event()

    def _rss(self) -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * self.page

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_above = max(self.rss_above, self._rss() - self.baseline)
            time.sleep(0.005)

    def __enter__(self) -> PeakMemory:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self.cuda_baseline = torch.cuda.memory_allocated(self.device)
        self.baseline = self._rss()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self._stop.set()
        self._thread.join()
        self.rss_above = max(self.rss_above, self._rss() - self.baseline)
        if self.device.type == "cuda":
            self.cuda_above = torch.cuda.max_memory_allocated(self.device) - self.cuda_baseline

    def describe(self) -> str:
        text = f"peak RSS +{self.rss_above / 2**20:.0f} MiB"
        return text + (f", CUDA +{self.cuda_above / 2**20:.0f} MiB" if self.device.type == "cuda" else "")
