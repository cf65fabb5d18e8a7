"""ViSERN (Feng et al., "Exploiting Visual Semantic Reasoning for Video-Text Retrieval", IJCAI 2020;
itr_video_methods §2). No public code: everything beyond the abstract is reconstructed and named as an argument.

Video side (§2.1-2.2): the regions of each sampled frame are the vertices of a fully connected semantic correlation
graph; a random-walk-rule GCN reasons over them (relation-aware regions, redundancy suppressed by the stochastic
transition matrix P = D^-1 A+), the reasoned regions are averaged into frame features, and the frame sequence is
encoded Dual-Encoding style (mean, biGRU, biGRU-CNN):

    v = BN(W_v [mean_t f_t, biGRU(f), biGRU-CNN(f)]) / ||.||,   f_t = mean_r GCN^L(W_fc r)_{t, r}

Text side: Dual Encoding's multi-level text encoder, t = BN(W_t [BoW, biGRU, biGRU-CNN]) / ||.||.
Loss: VSE++ triplet with the hardest negative, margin 0.2, both directions (the objective argument). Score: v . t.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective, TripletObjective
from leccr_lightning.modules.heads import ProjectionHead
from leccr_lightning.modules.multilevel import MultiLevelTextEncoder
from leccr_lightning.modules.visern import ViSERNVideoEncoder


class ViSERN(RetrievalMethod):
    """ViSERN on per-frame region features (the data extra ``regions_extra``, ``data/video/regions.py``).

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI (``visual_dim`` is the region width when
            ``region_dim`` is unset, for data whose visual features are the regions).
        region_dim: width D of the region features (2048, BUTD Faster R-CNN on Visual Genome) [recall].
        regions_extra: name of the region extra in ``data.init_args.extras``.
        region_width: joint region width after the FC (2048) [recall]. gcn_layers: 4 (VSRN) [recall].
        normalizer: adjacency normaliser of the GCN, ``random_walk`` (P = D^-1 A+) [recon]; ``none_div_n`` (VSRN),
            ``row_softmax``, ``sym`` for ablations. self_loop: 1.0 [recon]. gcn_output_norm: ``batch`` (VSRN).
        normalize_regions: L2-normalise the projected regions (VSRN) [recall].
        video_gru_hidden, video_kernel_sizes, video_filters: Dual Encoding video side (1024; 2-5; 512) [recall].
        word_dim, text_gru_hidden, text_kernel_sizes, text_filters: Dual Encoding text side (500; 512; 2-4;
            512) [recall].
        embed_dim: joint space (2048, Dual Encoding) [recall]. batch_norm: BN in the heads (Dual Encoding).
        dropout: 0.2 on the heads (Dual Encoding) [recall].
        objective: default ``TripletObjective(margin=0.2, mining="hardest")`` (VSE++, itr spec §2.2) [recall].
        train_role, query_role: the caption roles trained on and queried with (English ``source`` / ``query``; on a
            CCR-layout collection the English queries are the ``translated`` role).
    """

    required_roles = ("source",)
    context_roles = ("visual", "source")

    def __init__(
        self,
        visual_dim: int,
        vocab_size: int | None = None,
        region_dim: int | None = None,
        regions_extra: str = "regions",
        region_width: int = 2048,
        gcn_layers: int = 4,
        normalizer: str = "random_walk",
        self_loop: float = 1.0,
        gcn_output_norm: str = "batch",
        normalize_regions: bool = True,
        video_gru_hidden: int = 1024,
        video_kernel_sizes: tuple[int, ...] = (2, 3, 4, 5),
        video_filters: int = 512,
        word_dim: int = 500,
        text_gru_hidden: int = 512,
        text_kernel_sizes: tuple[int, ...] = (2, 3, 4),
        text_filters: int = 512,
        embed_dim: int = 2048,
        batch_norm: bool = True,
        dropout: float = 0.2,
        objective: PairObjective | None = None,
        train_role: str = "source",
        query_role: str = "query",
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if vocab_size is None:
            raise ValueError("ViSERN's text encoder needs vocab_size (the CLI links it from data.vocab_size)")
        self.required_extras = (regions_extra,)
        self.required_roles = (train_role,)
        self.video = ViSERNVideoEncoder(
            region_dim or visual_dim,
            region_width,
            gcn_layers,
            normalizer,
            self_loop,
            gcn_output_norm,
            normalize_regions,
            video_gru_hidden,
            tuple(video_kernel_sizes),
            video_filters,
        )
        self.text = MultiLevelTextEncoder(vocab_size, word_dim, text_gru_hidden, tuple(text_kernel_sizes), text_filters)
        self.video_head = ProjectionHead(self.video.out_dim, embed_dim, batch_norm, dropout)
        self.text_head = ProjectionHead(self.text.out_dim, embed_dim, batch_norm, dropout)
        self.objective = self.attach_objective(objective if objective is not None else TripletObjective())

    def embed_video(self, batch: Mapping) -> torch.Tensor:
        """v [B, embed_dim] from the batch's regions (random-walk reasoning, frame pooling, multi-level encoding)."""
        name = self.hparams.regions_extra
        if name not in batch.get("extras", {}):
            raise ValueError(
                f"ViSERN reads region features from the data extra {name!r}; configure it in data.init_args.extras"
            )
        regions = batch["extras"][name]
        return self.video_head(self.video(regions["values"], regions["mask"]).pooled)

    def embed_text(self, tokens: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """t [B, embed_dim] (multi-level text encoding)."""
        return self.text_head(self.text(tokens["input_ids"], tokens["attention_mask"]))

    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        video = self.embed_video(batch)
        text = self.embed_text(batch["text"][self.hparams.train_role])
        step = self.alignment_step(batch, {"visual": video, "source": text})
        loss = self.objective(step.pair("source", "visual"))
        return {"loss": loss}

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"query": self.embed_text(batch["text"][self.hparams.query_role])}

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return {"gallery": self.embed_video(batch)}
