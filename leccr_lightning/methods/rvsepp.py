"""RVSE++ (Li et al., "Selectively Hard Negative Mining ...", itr spec §4): VSE-infinity with residual MLP heads.

Image: region features -> Linear (Xavier) -> x + MLP(x) -> GPO -> L2. Text: a BiGRU over a vocabulary built from
the training captions (``text_model="gru"``) or a Hugging Face encoder (``"tiny"`` or a local path) whose token
states go through Linear -> GPO -> L2. Trained with SelHN (``SelHNObjective``, m = 0.2, eps = 0.01) by default;
any ``PairObjective`` can be given instead (BCLS, Listwise, unified). Scores are cosine similarities.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective, SelHNObjective
from leccr_lightning.modules.gpo import RegionEncoder
from leccr_lightning.modules.gru_text import BiGRUTextEncoder
from leccr_lightning.modules.text_encoders import HFGPOTextEncoder


class RVSEPlusPlus(RetrievalMethod):
    """RVSE++ retrieval model.

    Args:
        visual_dim, vocab_size: linked from the DataModule (2048-d BUTD regions in the paper).
        text_model: ``"gru"`` (BiGRU, ``word_dim`` 300) or a Hugging Face name (``"tiny"`` / a local path).
        embed_dim: joint space size (1024 in the paper).
        residual: keep the residual MLP on the image side (False gives VSE-infinity).
        objective: the ranking objective (default SelHN).
        train_roles: caption roles trained against the image; the first has weight 1, the others
            ``target_weight``.
    """

    required_roles: tuple[str, ...] = ("source",)

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        text_model: str = "gru",
        embed_dim: int = 1024,
        word_dim: int = 300,
        text_hidden: int = 64,
        text_layers: int = 2,
        text_heads: int = 2,
        residual: bool = True,
        gpo_dim: int = 32,
        objective: PairObjective | None = None,
        train_roles: tuple[str, ...] = ("source", "target"),
        target_weight: float = 1.0,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if text_model == "gru":
            if vocab_size is None:
                raise ValueError("text_model 'gru' needs vocab_size (the CLI links it from data.vocab_size)")
            self.text = BiGRUTextEncoder(vocab_size, embed_dim, word_dim, gpo_dim=gpo_dim)
        else:
            self.text = HFGPOTextEncoder(
                text_model, vocab_size, embed_dim, text_hidden, text_layers, text_heads, gpo_dim
            )
        self.image = RegionEncoder(visual_dim, embed_dim, residual, gpo_dim)
        self.train_roles = tuple(train_roles)
        self.context_roles = ("visual", *self.train_roles)
        self.objective = self.attach_objective(objective if objective is not None else SelHNObjective())

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        embeddings = {"visual": self.image(batch["visual"], batch["visual_mask"])}
        embeddings.update({role: self.embed_text(batch["text"][role]) for role in self.train_roles})
        step = self.alignment_step(batch, embeddings)
        losses = {role: self.objective(step.pair(role, "visual")) for role in self.train_roles}
        weights = [1.0] + [self.hparams.target_weight] * (len(self.train_roles) - 1)
        total = sum(weight * losses[role] for weight, role in zip(weights, self.train_roles, strict=True))
        return {"loss": total, **losses}

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.embed_text(batch["text"]["query"])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.image(batch["visual"], batch["visual_mask"])}
