"""Bi-GRU text encoder of VSE-infinity / RVSE++ over a vocabulary built from the training captions (itr §4.3)."""

from __future__ import annotations

import torch
from torch import nn

from leccr_lightning.modules.gpo import GPO


class BiGRUTextEncoder(nn.Module):
    """Word embeddings (``word_dim`` 300, uniform +-0.1) -> 1-layer BiGRU (``embed_dim`` per direction, the two
    directions averaged) -> GPO over the valid tokens -> L2 norm.

    ``vocab_size`` is the size of the vocabulary built from the training captions (the DataModule's tokenizer
    trained on them, linked by the CLI).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 1024, word_dim: int = 300, layers: int = 1, gpo_dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.gru = nn.GRU(word_dim, embed_dim, num_layers=layers, batch_first=True, bidirectional=True)
        self.gpo = GPO(gpo_dim, gpo_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, embed_dim] of padded token ids [B, L]."""
        mask = attention_mask.bool()
        lengths = mask.sum(1).clamp(min=1).cpu()
        packed = nn.utils.rnn.pack_padded_sequence(
            self.embedding(input_ids), lengths, batch_first=True, enforce_sorted=False
        )
        states, _ = self.gru(packed)
        states, _ = nn.utils.rnn.pad_packed_sequence(states, batch_first=True, total_length=input_ids.shape[1])
        half = states.shape[-1] // 2
        states = (states[..., :half] + states[..., half:]) / 2
        return nn.functional.normalize(self.gpo(states, mask), dim=-1)
