"""ProTA's building blocks (Fang et al., ICME 2024; itr_video_methods §3): a CLIP backbone (Hugging Face ``CLIPModel``
from a local directory, or a tiny random one), CLIP4Clip's temporal transformer over frame embeddings, and the
diagonal-Gaussian token head of token-based probabilistic alignment (TPA).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


def build_clip(
    name_or_path: str,
    vocab_size: int | None = None,
    width: int = 64,
    layers: int = 2,
    heads: int = 2,
    projection_dim: int = 64,
    image_size: int = 32,
    patch_size: int = 8,
    max_positions: int = 77,
) -> nn.Module:
    """``"tiny"``: a random ``CLIPModel`` of the given sizes (text vocabulary ``vocab_size``, linked from the
    DataModule's tokenizer); otherwise ``CLIPModel.from_pretrained`` from a local directory or the local Hugging
    Face cache, never the network."""
    from transformers import CLIPConfig, CLIPModel

    if name_or_path == "tiny":
        if vocab_size is None:
            raise ValueError("a tiny CLIP needs vocab_size (the CLI links it from data.vocab_size)")
        sizes = {"hidden_size": width, "intermediate_size": 4 * width, "num_hidden_layers": layers}
        config = CLIPConfig(
            text_config={
                **sizes,
                "num_attention_heads": heads,
                "vocab_size": vocab_size,
                "max_position_embeddings": max_positions,
            },
            vision_config={**sizes, "num_attention_heads": heads, "image_size": image_size, "patch_size": patch_size},
            projection_dim=projection_dim,
        )
        return CLIPModel(config)
    try:
        return CLIPModel.from_pretrained(name_or_path, local_files_only=True)
    except OSError as err:
        raise OSError(
            f"CLIP model {name_or_path!r} is neither a local directory nor in the local Hugging Face cache; set "
            "model.init_args.clip_model to a local directory (no network at run time) or to 'tiny'"
        ) from err


def clip_text_tokens(clip: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Every text token of CLIP's text transformer (after its final layer norm) through the text projection,
    [B, L, projection_dim]; f_t = {t_SOS, t_1, ..., t_EOS} of ProTA."""
    states = clip.text_model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    return clip.text_projection(states)


def clip_frame_embeddings(clip: nn.Module, frames: torch.Tensor) -> torch.Tensor:
    """CLIP image embeddings [B, M, projection_dim] of frames [B, M, 3, S, S] (ViT pooled output, visual projection)."""
    batch, count = frames.shape[:2]
    pooled = clip.vision_model(pixel_values=frames.flatten(0, 1)).pooler_output
    return clip.visual_projection(pooled).view(batch, count, -1)


class TemporalTransformer(nn.Module):
    """CLIP4Clip's ``seqTransf``: v = x + TE(x + p) over the frame embeddings x [B, M, d] (key-padding mask),
    pre-norm layers with GELU, learnable positions p (std 0.01) [recall: 4 layers as in CLIP4Clip]."""

    def __init__(self, dim: int, layers: int = 4, heads: int = 8, max_frames: int = 64, dropout: float = 0.0):
        super().__init__()
        self.positions = nn.Parameter(torch.randn(max_frames, dim) * 0.01)
        layer = nn.TransformerEncoderLayer(
            dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if frames.shape[1] > self.positions.shape[0]:
            raise ValueError(f"{frames.shape[1]} frames exceed the temporal transformer's {self.positions.shape[0]}")
        hidden = self.blocks(frames + self.positions[: frames.shape[1]], src_key_padding_mask=~mask)
        return (frames + hidden) * mask[..., None]


class TokenGaussians(NamedTuple):
    """Diagonal Gaussian tokens: means [B, T, d], standard deviations and log-variances [B, T, d], validity [B, T]."""

    mean: torch.Tensor
    std: torch.Tensor
    logvar: torch.Tensor
    mask: torch.Tensor

    def uncertainty(self) -> torch.Tensor:
        """Mean variance of each item's valid tokens [B]."""
        variance = self.logvar.exp().mean(-1)
        mask = self.mask.to(variance.dtype)
        return (variance * mask).sum(1) / mask.sum(1).clamp_min(1)


class GaussianTokenHead(nn.Module):
    """Token features x -> N(mu, diag sigma^2): mu = x / ||x|| (``normalize_means``; CLIP similarities are cosines),
    log sigma^2 = W x + b with W = 0 and b = ``logvar_init`` at the start, so training starts from near-point tokens
    whose W2 similarity is the cosine [recon: the sigma head is not described beyond "each token is a Gaussian"]."""

    def __init__(self, dim: int, logvar_init: float = -4.0, normalize_means: bool = True):
        super().__init__()
        self.logvar = nn.Linear(dim, dim)
        nn.init.zeros_(self.logvar.weight)
        nn.init.constant_(self.logvar.bias, logvar_init)
        self.normalize_means = normalize_means

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor) -> TokenGaussians:
        mean = F.normalize(tokens, dim=-1) if self.normalize_means else tokens
        logvar = self.logvar(tokens)
        valid = mask.bool()[..., None]
        return TokenGaussians(mean * valid, (0.5 * logvar).exp() * valid, logvar * valid, mask.bool())
