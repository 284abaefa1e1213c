"""An LSTM cell written out with linear maps (vmap-safe; the recurrent input may be wider
than the hidden state, as Matching Networks' attention LSTM needs)."""

from __future__ import annotations

import torch
from torch import nn


class LSTMCell(nn.Module):
    """i, f, g, o = split(W_x x + W_h h + b); c' = f c + i g; h' = o tanh(c')."""

    def __init__(self, input_size: int, hidden_size: int, recurrent_size: int | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_map = nn.Linear(recurrent_size or hidden_size, 4 * hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        gates = self.input_map(x) + self.recurrent_map(h)
        # One copy to [4, ..., hidden] makes each gate contiguous: sigmoid/tanh on the strided
        # chunks ran ~10x slower per element (Meta-LSTM's 112k-row cell spent most time there).
        i, f, g, o = gates.unflatten(-1, (4, self.hidden_size)).movedim(-2, 0).contiguous()
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
