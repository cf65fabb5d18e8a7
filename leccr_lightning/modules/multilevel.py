"""Dual Encoding's multi-level sequence encoding (Dong et al., CVPR 2019), the frame- and text-level encoders ViSERN
builds on (itr_video_methods §2.2): level 1 a global pooling of the inputs (mean of frames; bag of words for text),
level 2 the masked mean of biGRU states, level 3 1-D convolutions over the biGRU states with masked max pooling;
the three are concatenated.
"""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.pooling import masked_mean


class BiGRUCNN(nn.Module):
    """Levels 2 and 3 over a padded sequence [B, T, D] (valid positions form a prefix, ``mask`` [B, T]).

    Level 2: mean over valid steps of the concatenated forward/backward GRU states (2 * ``hidden``). Level 3: for each
    kernel size k, ``filters`` Conv1d channels over the GRU states padded by k - 1 on both sides, ReLU, max over the
    outputs that touch a valid step. ``out_dim`` = 2 * hidden + len(kernel_sizes) * filters.
    """

    def __init__(self, in_dim: int, hidden: int, kernel_sizes: tuple[int, ...], filters: int):
        super().__init__()
        self.gru = nn.GRU(in_dim, hidden, batch_first=True, bidirectional=True)
        self.convs = nn.ModuleList(nn.Conv1d(2 * hidden, filters, k, padding=k - 1) for k in kernel_sizes)
        self.kernel_sizes = tuple(kernel_sizes)
        self.out_dim = 2 * hidden + len(kernel_sizes) * filters

    def forward(self, sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(1).clamp_min(1)
        packed = nn.utils.rnn.pack_padded_sequence(sequence, lengths.cpu(), batch_first=True, enforce_sorted=False)
        states, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=sequence.shape[1])
        levels = [masked_mean(states, mask)]
        for k, conv in zip(self.kernel_sizes, self.convs, strict=True):
            out = conv(states.transpose(1, 2)).relu()
            valid = torch.arange(out.shape[-1], device=out.device)[None, :] < (lengths + k - 1)[:, None]
            levels.append(out.masked_fill(~valid[:, None, :], float("-inf")).amax(-1))
        return torch.cat(levels, dim=-1)


class MultiLevelVideoEncoder(nn.Module):
    """Frame features [B, F, D] -> [mean of frames, biGRU mean, biGRU-CNN] (Dual Encoding's video side)."""

    def __init__(
        self, in_dim: int, hidden: int = 1024, kernel_sizes: tuple[int, ...] = (2, 3, 4, 5), filters: int = 512
    ):
        super().__init__()
        self.levels = BiGRUCNN(in_dim, hidden, kernel_sizes, filters)
        self.out_dim = in_dim + self.levels.out_dim

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return torch.cat([masked_mean(frames, mask), self.levels(frames, mask)], dim=-1)


class MultiLevelTextEncoder(nn.Module):
    """Token ids [B, L] -> [bag of words, biGRU mean, biGRU-CNN] over word embeddings (Dual Encoding's text side).

    The bag of words counts the valid tokens over the DataModule tokenizer's vocabulary (Dual Encoding counts the
    words of its count >= 5 vocabulary; ``leccr`` links ``vocab_size`` from the tokenizer) [recon]. Word embeddings of
    ``word_dim`` (500: Dual Encoding's word2vec width) are trained from a uniform(-0.1, 0.1) start.
    """

    def __init__(
        self,
        vocab_size: int,
        word_dim: int = 500,
        hidden: int = 512,
        kernel_sizes: tuple[int, ...] = (2, 3, 4),
        filters: int = 512,
    ):
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.levels = BiGRUCNN(word_dim, hidden, kernel_sizes, filters)
        self.out_dim = vocab_size + self.levels.out_dim

    def bag_of_words(self, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Counts [B, vocab_size] of the valid tokens."""
        counts = torch.zeros(input_ids.shape[0], self.vocab_size, device=input_ids.device)
        return counts.scatter_add_(1, input_ids, mask.to(counts.dtype))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.bool()
        words = self.embedding(input_ids)
        return torch.cat([self.bag_of_words(input_ids, mask), self.levels(words, mask)], dim=-1)
