"""ProTA (Fang et al., "Probabilistic Token Aggregation for Text-Video Retrieval", ICME 2024; itr_video_methods §3).
No public code: everything beyond the abstract is reconstructed and named as an argument.

Tokens (§3.1): text f_t = {t_SOS, t_1, ..., t_EOS} from CLIP's text transformer; video: M sampled frames -> CLIP ViT
frame embeddings (end to end, or cached for a frozen backbone) -> temporal transformer -> f_v = {v_0, ..., v_{M-1}}.

Token-based probabilistic alignment (TPA): every token is a diagonal Gaussian N(mu, sigma^2); token similarity
from the 2-Wasserstein distance,
    W2^2_ij = ||mu_i - mu_j||^2 + ||sigma_i - sigma_j||^2,        s_ij = 1 - W2^2_ij / 2          (1)
(the cosine of unit means when the variances agree).
Dual partial-related aggregation (DPA), low dimension: softmax-weighted token matching both ways
    l_{t_i -> v} = sum_j s_ij softmax_j(lambda s_ij),  l_{v_j -> t} = sum_i s_ij softmax_i(lambda s_ij)      (2)
    S_low(t, v) = 1/2 (mean_i l_{t_i -> v} + mean_j l_{v_j -> t});
high dimension: the same aggregation of the multi-Gaussian-kernel Gram G_ij = 1/K sum_k exp(-W2^2_ij / 2 s_k^2) (3),
    S(t, v) = S_low + w_k S_high.                                                                       (4)
Loss: L_all = L_contra + beta L_KL, L_contra the adaptive-margin symmetric InfoNCE over S (5) and
    L_KL = mean over tokens of KL(N(mu, sigma^2) || N(0, I)) (text and video)                             (6).

At test time token-level scores are computed in blocks of at most ``score_block_elements`` token pairs (queries x
videos x N x M), so a 1k x 1k x 32 x 12 evaluation is never materialised at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.losses.probabilistic import gaussian_kl, pairwise_w2_squared
from leccr_lightning.methods.base import RetrievalMethod
from leccr_lightning.methods.objectives import PairObjective
from leccr_lightning.methods.objectives.probabilistic import AdaptiveMarginObjective
from leccr_lightning.modules.prota import (
    GaussianTokenHead,
    TemporalTransformer,
    TokenGaussians,
    build_clip,
    clip_frame_embeddings,
    clip_text_tokens,
)
from leccr_lightning.modules.token_aggregation import dual_partial_aggregation, multi_kernel_gram

VIDEO_INPUTS = ("tokens", "frames")


def probabilistic_token_scores(
    text_mean: torch.Tensor,
    text_std: torch.Tensor,
    text_mask: torch.Tensor,
    video_mean: torch.Tensor,
    video_std: torch.Tensor,
    video_mask: torch.Tensor,
    aggregation_temperature: float,
    kernel_bandwidths: Sequence[float],
    kernel_weight: float,
) -> torch.Tensor:
    """S [Q, G] of Q texts [Q, N, d] and G videos [G, M, d] (eqs. 1-4), materialising [Q, N, G, M] at once."""
    w2 = pairwise_w2_squared(text_mean, text_std, video_mean, video_std)
    scores = dual_partial_aggregation(1.0 - w2 / 2, text_mask, video_mask, aggregation_temperature)
    if kernel_weight:
        gram = multi_kernel_gram(w2, kernel_bandwidths)
        scores = scores + kernel_weight * dual_partial_aggregation(gram, text_mask, video_mask, aggregation_temperature)
    return scores


class ProTAScorer:
    """Evaluation scores [queries, G] from the token views ``mean``/``std``/``mask`` of queries and gallery, in blocks
    of at most ``block_elements`` token pairs (query rows x gallery columns x N x M)."""

    def __init__(
        self,
        aggregation_temperature: float,
        kernel_bandwidths: Sequence[float],
        kernel_weight: float,
        block_elements: int,
    ):
        if block_elements < 1:
            raise ValueError(f"score block: expected at least one element, got {block_elements}")
        self.options = (aggregation_temperature, tuple(kernel_bandwidths), kernel_weight)
        self.block_elements = block_elements

    def __call__(self, queries: Mapping[str, torch.Tensor], gallery: Mapping[str, torch.Tensor]) -> torch.Tensor:
        text = (queries["mean"], queries["std"], queries["mask"].bool())
        video = (gallery["mean"], gallery["std"], gallery["mask"].bool())
        (num_queries, tokens), (num_videos, frames) = text[2].shape, video[2].shape
        per_video = max(1, tokens * frames)
        rows = max(1, min(num_queries, self.block_elements // (per_video * num_videos) or 1))
        columns = max(1, min(num_videos, self.block_elements // (per_video * rows)))
        scores = text[0].new_empty(num_queries, num_videos)
        for start in range(0, num_queries, rows):
            chunk = tuple(x[start : start + rows] for x in text)
            for first in range(0, num_videos, columns):
                block = tuple(x[first : first + columns] for x in video)
                scores[start : start + rows, first : first + columns] = probabilistic_token_scores(
                    chunk[0], chunk[1], chunk[2], block[0], block[1], block[2], *self.options
                )
        return scores


class ProTA(RetrievalMethod):
    """ProTA on CLIP, on cached frame tokens (``video_input: tokens``, frozen visual backbone) or on decoded frames
    (``video_input: frames``, end-to-end fine-tuning).

    Args:
        visual_dim, vocab_size: linked from the DataModule by the CLI (``vocab_size`` sizes a tiny CLIP's text side).
        clip_model: a local Hugging Face CLIP directory (ViT-B/32 [recall]) or ``"tiny"`` (random, of
            ``clip_width``/``clip_layers``/``clip_heads``/``clip_projection_dim``/``clip_image_size``/``clip_patch_size``).
        video_input: ``tokens`` (the extra ``frames_extra`` holds cached CLIP frame embeddings [B, M, d]) or ``frames``
            (it holds pixels [B, M, 3, S, S], data ``VideoFrames``).
        frames_extra: name of that data extra.
        clip_lr: learning rate of the CLIP parameters (1e-7, CLIP4Clip convention [recall]); ``None``: the optimiser's.
        freeze_clip: keep CLIP fixed (the frozen-backbone mode; the text encoder included).
        temporal_layers (4), temporal_heads (8): CLIP4Clip's seqTransf [recall]. max_frames: positions (64).
        logvar_init: initial log sigma^2 of the Gaussian head (-4) [recon]. normalize_means: unit means [recon].
        aggregation_temperature: lambda of eq. 2 (10) [recon: the value is not known].
        kernel_bandwidths: s_k of eq. 3 ((0.5, 1, 2)) [recon]. kernel_weight: w_k of eq. 4 (1.0) [recon].
        kl_weight: beta of L_all (1e-3) [recon].
        max_text_tokens: text views are padded to this many tokens for evaluation (the DataModule's ``max_length``;
            32 for MSR-VTT/LSMDC, 64 for DiDeMo [recall]).
        eval_frames: video views are padded to this many frames for evaluation (M: 12, DiDeMo 64 [recall]).
        score_block_elements: token pairs per evaluation score block (2^24: 64 MiB of fp32 per intermediate).
        objective: default ``AdaptiveMarginObjective()`` (eq. 5, margin rule [recon]).
        train_role, query_role: the caption roles trained on and queried with (English ``source`` / ``query``; on a
            CCR-layout collection the English queries are the ``translated`` role).
    """

    context_roles = ("visual", "source", "source_uncertainty", "visual_uncertainty")

    def __init__(
        self,
        visual_dim: int | None = None,
        vocab_size: int | None = None,
        clip_model: str = "tiny",
        clip_width: int = 64,
        clip_layers: int = 2,
        clip_heads: int = 2,
        clip_projection_dim: int = 64,
        clip_image_size: int = 32,
        clip_patch_size: int = 8,
        video_input: str = "tokens",
        frames_extra: str = "frame_tokens",
        clip_lr: float | None = 1e-7,
        freeze_clip: bool = False,
        temporal_layers: int = 4,
        temporal_heads: int = 8,
        max_frames: int = 64,
        logvar_init: float = -4.0,
        normalize_means: bool = True,
        aggregation_temperature: float = 10.0,
        kernel_bandwidths: tuple[float, ...] = (0.5, 1.0, 2.0),
        kernel_weight: float = 1.0,
        kl_weight: float = 1e-3,
        max_text_tokens: int = 32,
        eval_frames: int = 12,
        score_block_elements: int = 2**24,
        objective: PairObjective | None = None,
        train_role: str = "source",
        query_role: str = "query",
        **base_kwargs,
    ):
        super().__init__(**base_kwargs)
        self.save_hyperparameters(ignore=["optimizer", "scheduler", "objective"])
        if video_input not in VIDEO_INPUTS:
            raise ValueError(f"video_input {video_input!r}: expected one of {VIDEO_INPUTS}")
        self.required_extras = (frames_extra,)
        self.required_roles = (train_role,)
        self.clip = build_clip(
            clip_model,
            vocab_size,
            clip_width,
            clip_layers,
            clip_heads,
            clip_projection_dim,
            clip_image_size,
            clip_patch_size,
        )
        if video_input == "tokens":
            self.clip.vision_model.requires_grad_(False)
            self.clip.visual_projection.requires_grad_(False)
        if freeze_clip:
            self.clip.requires_grad_(False)
        width = int(self.clip.config.projection_dim)
        self.temporal = TemporalTransformer(width, temporal_layers, temporal_heads, max_frames)
        self.gaussian = GaussianTokenHead(width, logvar_init, normalize_means)
        self.objective = self.attach_objective(objective if objective is not None else AdaptiveMarginObjective())

    # --- tokens -------------------------------------------------------------------------------------------------
    def encode_text(self, tokens: Mapping[str, torch.Tensor]) -> TokenGaussians:
        """Gaussian text tokens {t_SOS, ..., t_EOS}."""
        mask = tokens["attention_mask"].bool()
        return self.gaussian(clip_text_tokens(self.clip, tokens["input_ids"], mask.long()), mask)

    def frame_embeddings(self, batch: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """CLIP frame embeddings [B, M, d] (cached, or from the pixels) and the frame mask [B, M]."""
        name = self.hparams.frames_extra
        if name not in batch.get("extras", {}):
            raise ValueError(
                f"ProTA reads video frames from the data extra {name!r}; configure it in data.init_args.extras"
            )
        frames = batch["extras"][name]
        if self.hparams.video_input == "frames":
            return clip_frame_embeddings(self.clip, frames["values"]), frames["mask"].bool()
        width = self.clip.config.projection_dim
        if frames["values"].ndim != 3 or frames["values"].shape[-1] != width:
            raise ValueError(
                f"cached frame tokens of shape {tuple(frames['values'].shape)}: expected [B, M, {width}] CLIP frame "
                "embeddings of the configured CLIP (its projection_dim)"
            )
        return frames["values"], frames["mask"].bool()

    def encode_video(self, batch: Mapping) -> TokenGaussians:
        """Gaussian video tokens {v_0, ..., v_{M-1}} (frame embeddings through the temporal transformer)."""
        frames, mask = self.frame_embeddings(batch)
        return self.gaussian(self.temporal(frames, mask), mask)

    def pair_scores(self, text: TokenGaussians, video: TokenGaussians) -> torch.Tensor:
        """S [texts, videos] (eqs. 1-4)."""
        hp = self.hparams
        return probabilistic_token_scores(
            text.mean,
            text.std,
            text.mask,
            video.mean,
            video.std,
            video.mask,
            hp.aggregation_temperature,
            hp.kernel_bandwidths,
            hp.kernel_weight,
        )

    @staticmethod
    def global_embedding(tokens: TokenGaussians, eos: bool) -> torch.Tensor:
        """Unit global vector of an item: its EOS token (text) or the mean of its token means (video)."""
        if eos:
            last = tokens.mask.sum(1).clamp_min(1) - 1
            return F.normalize(tokens.mean[torch.arange(len(last), device=last.device), last], dim=-1)
        mask = tokens.mask[..., None].to(tokens.mean.dtype)
        return F.normalize((tokens.mean * mask).sum(1) / mask.sum(1).clamp_min(1), dim=-1)

    def gather_tokens(self, tokens: TokenGaussians) -> TokenGaussians:
        """The tokens of every rank (``gather_negatives``), so the scores span the global batch."""
        mean, std, logvar = (self.gather(x) for x in tokens[:3])
        return TokenGaussians(mean, std, logvar, self.gather(tokens.mask.to(mean.dtype)).bool())

    # --- losses -------------------------------------------------------------------------------------------------
    def compute_losses(self, batch: Mapping) -> dict[str, torch.Tensor]:
        text = self.encode_text(batch["text"][self.hparams.train_role])
        video = self.encode_video(batch)
        scores = self.pair_scores(self.gather_tokens(text), self.gather_tokens(video))
        step = self.alignment_step(
            batch,
            {
                "visual": self.global_embedding(video, eos=False),
                "source": self.global_embedding(text, eos=True),
                "source_uncertainty": text.uncertainty()[:, None],
                "visual_uncertainty": video.uncertainty()[:, None],
            },
        )
        loss_contra = self.objective(step.pair("source", "visual", scores=scores))  # eq. 5
        loss_kl = gaussian_kl(text.mean, text.logvar, text.mask) + gaussian_kl(video.mean, video.logvar, video.mask)
        return {"loss": loss_contra + self.hparams.kl_weight * loss_kl, "contra": loss_contra, "kl": loss_kl}

    # --- evaluation ---------------------------------------------------------------------------------------------
    @staticmethod
    def _views(tokens: TokenGaussians, length: int) -> dict[str, torch.Tensor]:
        """Token views padded (or cut) to ``length`` tokens, so that batches concatenate in the metric."""
        if tokens.mask.shape[1] > length:
            raise ValueError(f"{tokens.mask.shape[1]} tokens exceed the evaluation length {length}")
        pad = length - tokens.mask.shape[1]
        return {
            "mean": nn.functional.pad(tokens.mean, (0, 0, 0, pad)),
            "std": nn.functional.pad(tokens.std, (0, 0, 0, pad)),
            "mask": nn.functional.pad(tokens.mask, (0, pad)).to(tokens.mean.dtype),
        }

    def encode_queries(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return self._views(self.encode_text(batch["text"][self.hparams.query_role]), self.hparams.max_text_tokens)

    def encode_gallery(self, batch: Mapping) -> dict[str, torch.Tensor]:
        return self._views(self.encode_video(batch), self.hparams.eval_frames)

    def scorer(self, stage: str = "test") -> Callable:
        hp = self.hparams
        return ProTAScorer(hp.aggregation_temperature, hp.kernel_bandwidths, hp.kernel_weight, hp.score_block_elements)

    # --- optimisation -------------------------------------------------------------------------------------------
    def parameter_groups(self) -> list[dict]:
        """The base groups, with CLIP's parameters at ``clip_lr`` (new modules at the optimiser's rate)."""
        if self.hparams.clip_lr is None:
            return super().parameter_groups()
        groups = []
        for group in super().parameter_groups():
            clip_ids = {id(p) for p in self.clip.parameters()}
            own = [p for p in group["params"] if id(p) not in clip_ids]
            clip = [p for p in group["params"] if id(p) in clip_ids]
            extra = {k: v for k, v in group.items() if k != "params"}
            groups += [{"params": own, **extra}, {"params": clip, **extra, "lr": self.hparams.clip_lr}]
        return [group for group in groups if group["params"]]
