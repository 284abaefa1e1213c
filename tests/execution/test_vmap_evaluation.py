"""``strategy=vmap``'s per-task map: test-time adaptation under ``torch.func.vmap``.

The graph-free evaluation (``metalab.fast_eval``) made its support gradients with
``requires_grad_`` + ``autograd.grad``, which vmap refuses: ``strategy=vmap`` failed at the
first validation, and ``strategy=auto`` on a GPU fell back to the loop for every map. Under
vmap the gradient now comes from ``torch.func``; the scores must equal the loop's.
"""

from __future__ import annotations

import pytest
import torch

from metalab.algorithms import ANIL, FOMAML, MAML, MetaSGD, Reptile
from metalab.execution import LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from tests.helpers.cases import conv_case, mlp_case

ALGORITHMS = {
    "maml": lambda loop, lr: MAML(loop, 1, lr, 3, lr),
    "fomaml": lambda loop, lr: FOMAML(loop, 1, lr, 3, lr, first_order=True),
    "reptile": lambda loop, lr: Reptile(loop, 2, lr, 3, lr),
    "anil": lambda loop, lr: ANIL(loop, 1, lr, 3, lr),
    "metasgd": lambda loop, lr: MetaSGD(loop, 1, lr, 3, lr),
}


@pytest.mark.parametrize("case", [conv_case, mlp_case], ids=["conv4", "mlp"])
@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_vmap_map_scores_equal_the_loops(name, case):
    model, _, kind, batch, lr = case()
    algorithm = ALGORITHMS[name](InnerLoop(model, kind), lr).double()
    params = {k: p.detach() for k, p in model.named_parameters()}
    with torch.no_grad():
        loop = LoopStrategy().map(algorithm.evaluate, params, batch)
        vmapped = VmapStrategy(chunk=2).map(algorithm.evaluate, params, batch)
    assert loop.keys() == vmapped.keys()
    for key in loop:
        assert loop[key].shape == vmapped[key].shape == (len(batch), 4)
        torch.testing.assert_close(vmapped[key], loop[key], rtol=1e-9, atol=1e-10)
