"""Visual-semantic embedding methods for image-text ranking: RVSE++ (Li et al., "Selectively Hard Negative Mining for
Alleviating Gradient Vanishing in Image-Text Matching", itr spec §4) and the VSE++ encoder of the released BCLS,
Listwise ITR and unified-loss code (itr spec §5.5), on which those objectives are trained.

Both embed an image's region features and a caption's words into one space and score pairs by cosine similarity;
every training text role is aligned with the image by the ranking objective (SelHN for RVSE++; BCLS, Listwise or the
unified loss as plug-ins).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from leccr_lightning.data.precomp import RegionCaptionAugmentation
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective, SelHNObjective
from leccr_lightning.modules.gpo import RegionEncoder
from leccr_lightning.modules.gru_text import BiGRUTextEncoder, GRUTextEncoder
from leccr_lightning.modules.text_encoders import HFGPOTextEncoder


class _JointEmbedding(RetrievalMethod):
    """Shared by the VSE methods: text and image encoders, one objective per training text role, and the binding of
    file-backed objective parts (caption-embedding relevance) to the DataModule at fit start."""

    required_roles: tuple[str, ...] = ("source",)
    text: torch.nn.Module
    image: torch.nn.Module

    def _attach(self, objective: PairObjective, train_roles: tuple[str, ...], target_weight: float) -> None:
        self.train_roles = tuple(train_roles)
        self.target_weight = target_weight
        self.context_roles = ("visual", *self.train_roles)
        self.objective = self.attach_objective(objective)

    def setup(self, stage: str) -> None:
        bind = getattr(self.objective, "bind_data", None)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        if stage == "fit" and bind is not None and datamodule is not None:
            bind(datamodule)

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.text(tokens["input_ids"], tokens["attention_mask"])

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        """L = L(first role, image) + ``target_weight`` * sum of L(other role, image) (one role in the papers)."""
        embeddings = {"visual": self.image(batch["visual"], batch["visual_mask"])}
        embeddings.update({role: self.embed_text(batch["text"][role]) for role in self.train_roles})
        step = self.alignment_step(batch, embeddings)
        losses = {role: self.objective(step.pair(role, "visual")) for role in self.train_roles}
        weights = [1.0] + [self.target_weight] * (len(self.train_roles) - 1)
        total = sum(weight * losses[role] for weight, role in zip(weights, self.train_roles, strict=True))
        return {"loss": total, **losses}

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.embed_text(batch["text"]["query"])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.image(batch["visual"], batch["visual_mask"])}


class RVSEPlusPlus(_JointEmbedding):
    """RVSE++: VSE-infinity's GPO pooling on both sides, a residual MLP on the regions, trained with SelHN.

    Image (AAA-Zheng/RVSEPP ``encoders.py:23-50``): h = W x + b (Xavier), h <- h + MLP(h) with MLP = 1024 -> 512
    (BatchNorm, ReLU) -> 1024, v = GPO(h) / ||.||. Text (``encoders.py:53-88``): 300-d word embeddings (uniform
    +-0.1) -> BiGRU (1024 per direction, directions averaged) -> GPO -> L2; ``text_model`` may instead be a Hugging
    Face encoder (``"tiny"`` or a local path) whose token states go through Linear -> GPO -> L2. GPO (§4.3): weights
    over the per-dimension sorted features from sine codes -> BiGRU(32) -> Linear -> softmax(/0.1). Loss: SelHN
    (m = 0.2, eps = 0.01, ``loss.py``). Training (``image_caption.py:53-98``): each region dropped with p = 0.2 and
    each caption token masked / replaced / deleted with p = 0.2 (``augmentation``, drawn per caption from a seeded
    generator, so a resumed run is exact). Optimisation (``train.py``, ``vse.py:47-49``): AdamW lr 5e-4 with torch's
    weight decay 0.01 on every parameter, lr x 0.1 after epoch 15 of 30, gradient norm clipped to 2, batch 128 with
    ``drop_last`` — the preset ``configs/model/rvsepp.yaml`` and its fragment.

    Args:
        visual_dim, vocab_size: linked from the DataModule (2048-d BUTD regions in the paper).
        text_model: ``"gru"`` (BiGRU over the word vocabulary) or a Hugging Face name (``"tiny"`` / a local path).
        embed_dim, word_dim: joint space (1024) and word embedding (300) sizes.
        text_hidden, text_layers, text_heads: sizes of the ``"tiny"`` Hugging Face encoder.
        image_mlp: ``"residual"`` (RVSE++), ``"parallel"`` (VSE-infinity: h = W x + MLP(x)) or ``"none"``.
        gpo_dim: GPO position-code and GRU size (32).
        objective: the ranking objective (default SelHN).
        augmentation: the training augmentations (``None``: none).
        train_roles: caption roles trained against the image; the first has weight 1, the others ``target_weight``.

    Differences from the official code:

    * the word tokenizer splits on whitespace and punctuation (``tokenizers``' BERT pre-tokenizer) where the
      official code runs NLTK's ``word_tokenize``, so hyphenated words and contractions split differently; a vocabulary
      built here reads the training captions only (SCAN ``vocab.py`` also reads ``dev``), so give the released
      ``vocab_json`` to share the official vocabulary;
    * captions longer than the DataModule's ``max_length`` (64 tokens) are cut (the official code never cuts);
    * the augmentations keep an image's regions or a caption's tokens when all would be dropped (the official code
      fails there), and draw from torch generators rather than Python's / NumPy's global RNG;
    * L2 normalisation divides by max(||x||, 1e-12) instead of ||x|| + 1e-8 (a relative difference below 1e-8);
    * validation logs MedR as the mean of the two middle 1-based ranks (numpy's median; the official evaluation takes
      floor(median(0-based)) + 1, which ``metrics.protocols.full_report`` / ``coco_report`` give);
    * rank ties: a negative scored equal to the positive does not push it down (the official argsort breaks ties
      by index; ties have probability 0 with float scores);
    * ``mask_same_item`` and ``no_decay_keys`` default to the framework's choices (same-image captions are not
      negatives; no weight decay on biases and norms); the preset sets ``mask_same_item: false`` and
      ``no_decay_keys: []`` as the official code does.
    """

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
        image_mlp: str = "residual",
        gpo_dim: int = 32,
        objective: PairObjective | None = None,
        augmentation: RegionCaptionAugmentation | None = None,
        train_roles: tuple[str, ...] = ("source",),
        target_weight: float = 1.0,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective", "augmentation"])
        if text_model == "gru":
            if vocab_size is None:
                raise ValueError("text_model 'gru' needs vocab_size (the CLI links it from data.vocab_size)")
            self.text = BiGRUTextEncoder(vocab_size, embed_dim, word_dim, gpo_dim=gpo_dim)
        else:
            self.text = HFGPOTextEncoder(
                text_model, vocab_size, embed_dim, text_hidden, text_layers, text_heads, gpo_dim
            )
        self.image = RegionEncoder(visual_dim, embed_dim, mlp=image_mlp, pooling="gpo", gpo_dim=gpo_dim)
        self.augmentation = augmentation
        self._attach(objective if objective is not None else SelHNObjective(), train_roles, target_weight)

    def on_before_batch_transfer(self, batch, dataloader_idx: int):
        """Training batches only: region drop and caption perturbation (RVSEPP ``image_caption.py:53-98``), seeded
        by the epoch and each caption id."""
        trainer = self._trainer
        if self.augmentation is None or trainer is None or not trainer.training:
            return batch
        tokenizer = getattr(trainer.datamodule, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("RVSE++ caption perturbation needs the DataModule's tokenizer (its mask and pad ids)")
        return self.augmentation(
            batch, trainer.current_epoch, tokenizer.mask_token_id, len(tokenizer), int(tokenizer.pad_token_id)
        )


class VSEPlusPlus(_JointEmbedding):
    """VSE++ as the released BCLS (AAA-Zheng/ITM_CLS), Listwise ITR (Listwise_ITR) and unified-loss (MV-VSE) code
    build it (ITM_CLS ``model.py:16-77``, Listwise_ITR ``model.py:24-95``, MV-VSE ``model.py:25-100`` with k = 1).

    Image: v = max_r (W x_r + b) / ||.|| over the regions (Xavier W, zero b). Text: 300-d word embeddings (uniform
    +-0.1) -> GRU(1024) -> the output at the last token -> L2. Optimisation (their ``train.py`` / ``model.py``): Adam
    lr 5e-4, 20 epochs without decay (``lr_update`` 20), gradient norm clipped to 2, batch 128 — the presets
    ``configs/model/{bcls,listwise,unified}.yaml`` and their fragments.

    Args:
        visual_dim, vocab_size: linked from the DataModule.
        embed_dim, word_dim: joint space (1024) and word embedding (300) sizes.
        objective: the ranking objective (BCLS, Listwise, unified...; default SelHN).
        train_roles, target_weight: as in ``RVSEPlusPlus``.

    Differences from the official code: the tokenizer and ``max_length`` as in ``RVSEPlusPlus``; the released
    loaders keep the last incomplete batch of an epoch while the shared precomp preset sets ``drop_last`` (for
    RVSE++); validation MedR as in ``RVSEPlusPlus``; the presets set ``mask_same_item: false``.
    """

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        embed_dim: int = 1024,
        word_dim: int = 300,
        objective: PairObjective | None = None,
        train_roles: tuple[str, ...] = ("source",),
        target_weight: float = 1.0,
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if vocab_size is None:
            raise ValueError("VSE++ needs vocab_size (the CLI links it from data.vocab_size)")
        self.text = GRUTextEncoder(vocab_size, embed_dim, word_dim)
        self.image = RegionEncoder(visual_dim, embed_dim, mlp="none", pooling="max")
        self._attach(objective if objective is not None else SelHNObjective(), train_roles, target_weight)
