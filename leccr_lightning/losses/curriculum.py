"""Dual-view curriculum for DCOT's transport cost: C = lambda C^L + (1 - lambda) C^M (ccr spec §5.2, [recon]).

lambda weights the cross-lingual view (English vs MT text, reliable early) and 1 - lambda the cross-modal
view (visual vs MT text). Everything numeric here is our proposal, not the paper's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

MODES = ("progress", "accuracy")
RAMPS = ("linear", "cosine")


def _check_unit(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}: expected a value in [0, 1], got {value}")


@dataclass
class CurriculumSchedule:
    """Weights (lambda, 1 - lambda) for the (cross-lingual, cross-modal) views.

    - ``mode="progress"``: lambda stays at ``start`` for progress p < ``warmup``, then ramps to ``end`` at
      p = 1, linearly or along a half cosine (default 1.0 -> 0.5 linear, [recon]).
    - ``mode="accuracy"``: lambda = r^L / (r^L + r^M), r = EMA (momentum ``ema_momentum``) of each view's
      in-batch retrieval accuracy (e.g. diagonal R@1), clipped to [``min_weight``, ``max_weight``]; before
      the first accuracy and during warm-up it is ``start``.
    The EMA state is saved by :meth:`state_dict` so that a resumed run continues identically.
    """

    mode: str = "progress"
    start: float = 1.0
    end: float = 0.5
    warmup: float = 0.0
    ramp: str = "linear"
    ema_momentum: float = 0.9
    min_weight: float = 0.0
    max_weight: float = 1.0
    ema: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {self.mode!r}")
        if self.ramp not in RAMPS:
            raise ValueError(f"ramp: expected one of {RAMPS}, got {self.ramp!r}")
        for name in ("start", "end", "min_weight", "max_weight"):
            _check_unit(name, getattr(self, name))
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"warmup: expected a value in [0, 1), got {self.warmup}")
        if not 0.0 <= self.ema_momentum < 1.0:
            raise ValueError(f"ema_momentum: expected a value in [0, 1), got {self.ema_momentum}")
        if self.min_weight > self.max_weight:
            raise ValueError(f"min_weight {self.min_weight} must not exceed max_weight {self.max_weight}")

    def _progress_lambda(self, progress: float) -> float:
        """start + (end - start) * ramp((p - warmup) / (1 - warmup)), ramp(x) = x or (1 - cos(pi x)) / 2."""
        if progress < self.warmup:
            return self.start
        x = (progress - self.warmup) / (1.0 - self.warmup)
        shaped = x if self.ramp == "linear" else 0.5 * (1.0 - math.cos(math.pi * x))
        return self.start + (self.end - self.start) * shaped

    def _accuracy_lambda(self, accuracy: tuple[float, float] | None) -> float:
        """Update the EMA with ``accuracy`` (if given) and return the clipped r^L / (r^L + r^M)."""
        if accuracy is not None:
            if len(accuracy) != 2:
                raise ValueError(f"accuracy: expected (cross_lingual, cross_modal), got {accuracy}")
            for name, value in zip(("accuracy[0]", "accuracy[1]"), accuracy, strict=True):
                _check_unit(name, value)
            if self.ema is None:
                self.ema = (float(accuracy[0]), float(accuracy[1]))
            else:
                m = self.ema_momentum
                self.ema = (
                    m * self.ema[0] + (1 - m) * accuracy[0],
                    m * self.ema[1] + (1 - m) * accuracy[1],
                )
        if self.ema is None or sum(self.ema) == 0:
            return self.start
        ratio = self.ema[0] / (self.ema[0] + self.ema[1])
        return min(max(ratio, self.min_weight), self.max_weight)

    def weights(
        self, progress: float | None = None, accuracy: tuple[float, float] | None = None
    ) -> tuple[float, float]:
        """(lambda, 1 - lambda); ``progress`` in [0, 1] is required in progress mode, optional (warm-up) in
        accuracy mode; ``accuracy`` = (cross-lingual, cross-modal) accuracies of the current batch."""
        if progress is not None:
            _check_unit("progress", progress)
        if self.mode == "progress":
            if progress is None:
                raise ValueError("progress: required in progress mode (training progress in [0, 1])")
            lam = self._progress_lambda(progress)
        else:
            lam = self._accuracy_lambda(accuracy)
            if progress is not None and progress < self.warmup:
                lam = self.start
        return lam, 1.0 - lam

    def state_dict(self) -> dict[str, tuple[float, float] | None]:
        """The mutable state (the accuracy EMA)."""
        return {"ema": self.ema}

    def load_state_dict(self, state: dict[str, tuple[float, float] | None]) -> None:
        """Restore the accuracy EMA saved by :meth:`state_dict`."""
        ema = state["ema"]
        self.ema = None if ema is None else (float(ema[0]), float(ema[1]))
