"""The Moment-DETR set criterion (jayleicn/moment_detr:moment_detr/model.py:148-347), a pure class without Lightning.

Per decoder layer (auxiliary layers when ``aux_loss``, each matched again, model.py:336-345): Hungarian matching
(§2.1), span L1 and 1 - gIoU over the matched pairs, foreground/background CE over all queries; on the last layer's
saliency, the margin hinge over (positive, negative) clip pairs. Terms are named ``span``, ``giou``, ``label``,
``saliency``; those of an auxiliary layer ``l`` get the suffix ``_aux<l>``. ``weights`` maps each name to its
coefficient, and ``weighted_total`` sums the terms with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from leccr_lightning.losses.spans import (
    Indices,
    foreground_loss,
    hungarian_match,
    saliency_hinge_loss,
    span_giou_loss,
    span_l1_loss,
)


def weighted_total(terms: Mapping[str, torch.Tensor], weights: Mapping[str, float]) -> torch.Tensor:
    """sum_n w[n] * L_n, where an auxiliary term ``<n>_aux<l>`` takes the weight of ``<n>``."""
    return sum(weights[name.split("_aux")[0]] * value for name, value in terms.items())


@dataclass(frozen=True)
class SetCriterion:
    """Matching costs and loss coefficients of the DETR grounding criterion (defaults: moment_detr/config.py).

    Args:
        span_loss_coef, giou_loss_coef, label_loss_coef: weights of span L1 (10), 1 - gIoU (1) and the
            foreground CE (4); ``eos_coef``: CE weight of the background class (0.1).
        lw_saliency: weight of the saliency hinge (1); ``saliency_margin``: its margin (0.2).
        set_cost_span, set_cost_giou, set_cost_class: matching costs (10, 1, 4).
        aux_loss: repeat the matched terms on every intermediate decoder layer.
    """

    span_loss_coef: float = 10.0
    giou_loss_coef: float = 1.0
    label_loss_coef: float = 4.0
    eos_coef: float = 0.1
    lw_saliency: float = 1.0
    saliency_margin: float = 0.2
    set_cost_span: float = 10.0
    set_cost_giou: float = 1.0
    set_cost_class: float = 4.0
    aux_loss: bool = True

    @property
    def weights(self) -> dict[str, float]:
        """Coefficient of each term name."""
        return {
            "span": self.span_loss_coef,
            "giou": self.giou_loss_coef,
            "label": self.label_loss_coef,
            "saliency": self.lw_saliency,
        }

    def layers(self, n_layers: int) -> list[tuple[int, str]]:
        """(layer, term-name suffix) of the decoder layers that get loss terms, the last one without a suffix."""
        chosen = range(n_layers) if self.aux_loss else [n_layers - 1]
        return [(layer, "" if layer == n_layers - 1 else f"_aux{layer}") for layer in chosen]

    def match(
        self,
        logits: torch.Tensor,
        spans: torch.Tensor,
        targets: Sequence[torch.Tensor],
        extra_costs: Sequence[torch.Tensor] | None = None,
    ) -> Indices:
        """Hungarian assignment of one layer's queries ([B, Q, 2] logits and (c, w) spans) to the GT spans."""
        return hungarian_match(
            logits, spans, targets, self.set_cost_span, self.set_cost_giou, self.set_cost_class, extra_costs
        )

    def layer_terms(
        self, logits: torch.Tensor, spans: torch.Tensor, targets: Sequence[torch.Tensor], indices: Indices
    ) -> dict[str, torch.Tensor]:
        """Span L1, 1 - gIoU and foreground CE of one decoder layer (§2.2)."""
        return {
            "span": span_l1_loss(spans, targets, indices),
            "giou": span_giou_loss(spans, targets, indices),
            "label": foreground_loss(logits, indices, self.eos_coef),
        }

    def __call__(
        self,
        outputs: Mapping[str, torch.Tensor],
        targets: Mapping,
        extra_costs: Sequence[torch.Tensor] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Named terms of ``outputs`` (``logits``/``spans`` [L, B, Q, 2], ``saliency`` [B, T]) against ``targets``
        (``spans``: list of [G_b, 2] normalised (c, w); ``saliency_pos``/``saliency_neg`` [B, P] clip indices).
        ``extra_costs[b]`` [Q, G_b] is added to every layer's matching cost."""
        terms: dict[str, torch.Tensor] = {}
        for layer, suffix in self.layers(outputs["logits"].shape[0]):
            logits, spans = outputs["logits"][layer], outputs["spans"][layer]
            indices = self.match(logits, spans, targets["spans"], extra_costs)
            for name, value in self.layer_terms(logits, spans, targets["spans"], indices).items():
                terms[name + suffix] = value
        terms["saliency"] = saliency_hinge_loss(
            outputs["saliency"], targets["saliency_pos"], targets["saliency_neg"], self.saliency_margin
        )
        return terms
