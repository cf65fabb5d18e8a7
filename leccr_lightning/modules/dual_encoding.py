"""Dual Encoding's multi-level text encoder (Dong et al., TPAMI 2021), the text side of RIVRL (itr_video_methods §1.1).

    level 1  BoW counts over the vocabulary                                  [B, |V|]
    level 2  word embeddings -> biGRU (``rnn_size`` per direction) -> mean    [B, 2 rnn_size]
    level 3  1-D convolutions (windows 2, 3, 4 x ``kernel_num``) over the biGRU states, ReLU, max over time
    optional a precomputed sentence feature (BERT, ``sentence_dim``)
    output   [level 2; level 3; level 1; sentence]   (LiJiaBei-7/rivrl:model.py:304-307)

Dropout 0.2 follows the biGRU mean and the convolution output, none the BoW or the sentence feature. Upstream runs the
convolutions over the batch's zero-padded states and max-pools over every position (model.py:298-300), so a caption's
vector depends on the longest caption of its batch; by default only the positions a caption would have on its own
are pooled, ``upstream_padding=True`` reproduces upstream.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from leccr_lightning.modules.pooling import masked_max, masked_mean

GRU_POOLS = ("mean", "max")


def gru_states(rnn: nn.GRU, inputs: torch.Tensor, lengths: torch.Tensor, packed: bool = True) -> torch.Tensor:
    """Outputs [B, T, 2H] of a batch-first bidirectional GRU: packed by ``lengths`` (zeros at padding), or run over
    the padded tensor as it is (``packed=False``: the backward direction then starts in the padding)."""
    if not packed:
        return rnn(inputs)[0]
    sequence = nn.utils.rnn.pack_padded_sequence(
        inputs, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
    )
    states, _ = rnn(sequence)
    return nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=inputs.shape[1])[0]


def pool_states(states: torch.Tensor, mask: torch.Tensor, mode: str, upstream_padding: bool = False) -> torch.Tensor:
    """``mean`` over the valid steps, or ``max`` (masked; upstream: the max of ``states * mask``, padding as zeros)."""
    if mode == "mean":
        return masked_mean(states, mask)
    if upstream_padding:
        return (states * mask.unsqueeze(-1).to(states.dtype)).amax(1)
    return masked_max(states, mask)


class MultiLevelTextEncoder(nn.Module):
    """Caption ids [B, L] (``<start>``/``<end>`` included), their mask and BoW counts [B, |V|] -> [B, ``out_dim``].

    Args:
        vocab_size: RNN vocabulary size (embedding rows); bow_size: BoW vocabulary size.
        word_dim: 500 (word2vec init via ``load_word_embeddings``; otherwise uniform(-0.1, 0.1), model.py:266-270).
        rnn_size: 512 per direction; kernel_num: 512 filters per window; kernel_sizes: (2, 3, 4), padded by
            (w - 1) // 2 on each side as upstream (0, 1, 1).
        dropout: 0.2; sentence_dim: size of the optional sentence feature (1024 for BERT; 0 = none).
        gru_pool: ``mean`` (upstream default) or ``max``.
        upstream_padding: pool the convolutions over the batch padding too (upstream behaviour).
    """

    def __init__(
        self,
        vocab_size: int,
        bow_size: int,
        word_dim: int = 500,
        rnn_size: int = 512,
        kernel_num: int = 512,
        kernel_sizes: tuple[int, ...] = (2, 3, 4),
        dropout: float = 0.2,
        sentence_dim: int = 0,
        gru_pool: str = "mean",
        upstream_padding: bool = False,
    ):
        super().__init__()
        if gru_pool not in GRU_POOLS:
            raise ValueError(f"gru_pool: expected one of {GRU_POOLS}, got {gru_pool!r}")
        self.embed = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)
        self.rnn = nn.GRU(word_dim, rnn_size, batch_first=True, bidirectional=True)
        self.kernel_sizes = tuple(kernel_sizes)
        self.convs = nn.ModuleList(nn.Conv1d(2 * rnn_size, kernel_num, w, padding=(w - 1) // 2) for w in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.gru_pool, self.upstream_padding = gru_pool, upstream_padding
        self.bow_size, self.sentence_dim = bow_size, sentence_dim
        self.out_dim = 2 * rnn_size + kernel_num * len(self.kernel_sizes) + bow_size + sentence_dim

    def load_word_embeddings(self, matrix: torch.Tensor) -> None:
        """Copy initial word embeddings [vocab_size, word_dim] (word2vec rows) into the embedding table."""
        if tuple(matrix.shape) != tuple(self.embed.weight.shape):
            raise ValueError(
                f"word embeddings of shape {tuple(matrix.shape)} do not fit the table {tuple(self.embed.weight.shape)} "
                "(word_dim must be the word2vec dimension, 500 for vec500flickr30m)"
            )
        with torch.no_grad():
            self.embed.weight.copy_(matrix)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        bow: torch.Tensor,
        sentence: torch.Tensor | None = None,
    ) -> torch.Tensor:
        mask = attention_mask.bool()
        lengths = mask.sum(1)
        if bow.shape[1] != self.bow_size:
            raise ValueError(f"bow: {bow.shape[1]} entries, the encoder was built for a vocabulary of {self.bow_size}")
        states = gru_states(self.rnn, self.embed(input_ids), lengths)
        rnn_vector = self.dropout(pool_states(states, mask, self.gru_pool, self.upstream_padding))
        channels = states.transpose(1, 2)
        levels = []
        for conv, width in zip(self.convs, self.kernel_sizes, strict=True):
            activations = F.relu(conv(channels))
            if self.upstream_padding:
                levels.append(activations.amax(2))
                continue
            # positions a caption of its own length would have: its length + 2 * padding - width + 1 (at least 1)
            valid = (lengths + 2 * conv.padding[0] - width + 1).clamp(min=1)
            positions = torch.arange(activations.shape[2], device=valid.device)
            levels.append(masked_max(activations.transpose(1, 2), positions[None, :] < valid[:, None]))
        parts = [rnn_vector, self.dropout(torch.cat(levels, 1)), bow.to(rnn_vector.dtype)]
        if self.sentence_dim:
            if sentence is None or sentence.shape[1] != self.sentence_dim:
                raise ValueError(f"the encoder expects a [B, {self.sentence_dim}] sentence feature (BERT extra)")
            parts.append(sentence.to(rnn_vector.dtype))
        return torch.cat(parts, 1)
