"""GRU text encoders over a word vocabulary: RVSE++ / VSE-infinity's BiGRU + GPO and VSE++'s GRU last state (itr §4.3,
§5.5). Both embed the words (``word_dim`` 300, uniform +-0.1) and run the GRU over each caption's own tokens only (a
packed sequence), so a caption's embedding never depends on its batch-mates' lengths."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from leccr_lightning.modules.gpo import GPO


def _packed_states(gru: nn.GRU, embedded: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """GRU outputs [B, L, H] over the valid (leading) tokens of each row; 0 on padding."""
    lengths = mask.sum(1).clamp(min=1).cpu()
    packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=False)
    states, _ = gru(packed)
    return pad_packed_sequence(states, batch_first=True, total_length=embedded.shape[1])[0]


class BiGRUTextEncoder(nn.Module):
    """Word embeddings -> 1-layer BiGRU (``embed_dim`` per direction, the two directions averaged) -> GPO over the
    valid tokens -> L2 norm (AAA-Zheng/RVSEPP ``encoders.py:53-88``, vse_infty ``encoders.py:166-206``).

    ``vocab_size`` is the size of the DataModule's vocabulary (linked by the CLI).
    """

    def __init__(self, vocab_size: int, embed_dim: int = 1024, word_dim: int = 300, layers: int = 1, gpo_dim: int = 32):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.gru = nn.GRU(word_dim, embed_dim, num_layers=layers, batch_first=True, bidirectional=True)
        self.gpo = GPO(gpo_dim, gpo_dim)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, embed_dim] of padded token ids [B, L] (valid tokens first)."""
        mask = attention_mask.bool()
        states = _packed_states(self.gru, self.embedding(input_ids), mask)
        half = states.shape[-1] // 2
        states = (states[..., :half] + states[..., half:]) / 2
        return nn.functional.normalize(self.gpo(states, mask), dim=-1)


class GRUTextEncoder(nn.Module):
    """VSE++: word embeddings -> 1-layer GRU (``embed_dim``) -> the output at each caption's last token -> L2 norm
    (AAA-Zheng/ITM_CLS ``model.py:50-77``, Listwise_ITR ``model.py:64-95``, MV-VSE ``model.py:69-100``)."""

    def __init__(self, vocab_size: int, embed_dim: int = 1024, word_dim: int = 300):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, word_dim)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        self.gru = nn.GRU(word_dim, embed_dim, batch_first=True)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings [B, embed_dim] of padded token ids [B, L] (valid tokens first)."""
        mask = attention_mask.bool()
        states = _packed_states(self.gru, self.embedding(input_ids), mask)
        last = (mask.sum(1).clamp(min=1) - 1).to(states.device)
        return nn.functional.normalize(states[torch.arange(states.shape[0], device=states.device), last], dim=-1)
