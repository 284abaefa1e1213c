"""ProtoNets, Matching and Siamese networks and Meta-LSTM: each defining computation equals a
direct small-case computation written here (loops over classes and coordinates, float64),
and each meta-gradient equals the gradient of that reference, under loop and vmap."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from metalab import native
from metalab.algorithms import build_algorithm
from metalab.algorithms.lstm_cell import LSTMCell
from metalab.algorithms.matchingnet import MatchingNet
from metalab.algorithms.metalstm import MetaLSTM, preprocess
from metalab.algorithms.protonet import ProtoNet
from metalab.algorithms.siamese import Siamese
from metalab.data.episodes import NWayKShot
from metalab.errors import ConfigError
from metalab.execution import LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION, REGRESSION
from metalab.models import build_model
from metalab.models.conv4 import Conv4
from metalab.models.embedding import without_head
from metalab.models.mlp import MLP
from metalab.native import fused_first_block
from metalab.native.fused_first_block import LANES
from metalab.preflight import check_head
from tests.helpers.cases import RandomImages, sample_batch
from tests.helpers.reference import relative_error

STRATEGIES = {"loop": LoopStrategy(), "vmap": VmapStrategy(chunk=2)}
needs_kernel = pytest.mark.skipif(
    fused_first_block.library() is None, reason="no C compiler for the fused kernel"
)


def embedding_case(ways: int = 3, shots: int = 2, queries: int = 2, channels: int = 4):
    """A float64 Conv-4 embedding (4 channels unless said, batch norm) and 3 random-image tasks."""
    torch.manual_seed(0)
    model = without_head(Conv4(1, 3, image_size=16, channels=channels), (1, 16, 16)).double()
    batch = sample_batch(NWayKShot(RandomImages(), ways, shots, queries), tasks=3)
    return model, batch.to("cpu", torch.float64)


def reference_embed(params: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """Conv-4's blocks from F.conv2d / F.batch_norm, flattened (no head)."""
    for i in range(0, len(params), 4):
        w, b, gamma, beta = params[i : i + 4]
        x = F.batch_norm(F.conv2d(x, w, b, padding=1), None, None, gamma, beta, training=True)
        x = F.max_pool2d(F.relu(x), 2)
    return x.flatten(1)


def episode_embeddings(params, task_x_support, task_x_query):
    both = reference_embed(params, torch.cat([task_x_support, task_x_query]))
    return both[: len(task_x_support)], both[len(task_x_support) :]


def metalab_gradient(algorithm, model, batch, strategy):
    model.zero_grad()
    algorithm.zero_grad()
    losses, metrics = strategy.meta_gradient(
        algorithm.meta_objective,
        dict(model.named_parameters()),
        batch,
        lambda loss: loss.backward(),
    )
    return losses, [p.grad.clone() for p in model.parameters()]


def reference_gradient(task_loss, model, batch):
    params = [p.detach().clone().requires_grad_() for p in model.parameters()]
    total = sum(task_loss(params, batch.task(i)) for i in range(len(batch))) / len(batch)
    return torch.autograd.grad(total, params)


# --- Prototypical Networks ----------------------------------------------------------------


def protonet_task_loss(params, task):
    support, query = episode_embeddings(params, task.support_x, task.query_x)
    ways = int(task.support_y.max()) + 1
    centres = torch.stack([support[task.support_y == c].mean(0) for c in range(ways)])
    logits = torch.stack([torch.stack([-((q - p) ** 2).sum() for p in centres]) for q in query])
    return F.cross_entropy(logits, task.query_y)


def test_prototypes_are_class_means_and_scores_are_negative_squared_distances():
    model, batch = embedding_case()
    algorithm = ProtoNet(InnerLoop(model, CLASSIFICATION))
    task = batch.task(0)
    params = dict(model.named_parameters())
    scores = algorithm.class_scores(params, task.support_x, task.support_y, task.query_x)
    support, query = algorithm.embed_episode(params, task.support_x, task.query_x)
    ways = 3
    assert scores.shape == (len(query), len(support))
    for q in range(len(query)):
        for c in range(ways):
            members = [support[i] for i in range(len(support)) if task.support_y[i] == c]
            mean = sum(members) / len(members)
            distance = sum((query[q, j] - mean[j]) ** 2 for j in range(len(mean)))
            torch.testing.assert_close(scores[q, c], -distance)
        assert torch.isneginf(scores[q, ways:]).all()  # columns of labels that do not occur


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_protonet_meta_gradient_matches_reference(strategy):
    model, batch = embedding_case()
    algorithm = ProtoNet(InnerLoop(model, CLASSIFICATION))
    losses, grads = metalab_gradient(algorithm, model, batch, STRATEGIES[strategy])
    expected = reference_gradient(protonet_task_loss, model, batch)
    torch.testing.assert_close(
        losses[0], protonet_task_loss(list(model.parameters()), batch.task(0))
    )
    assert relative_error(grads, expected) < 1e-10


# --- Matching Networks --------------------------------------------------------------------


def matching_task_loss(params, task, scale=1.0):
    support, query = episode_embeddings(params, task.support_x, task.query_x)
    ways = int(task.support_y.max()) + 1
    losses = []
    for q, target in zip(query, task.query_y, strict=True):
        cosines = torch.stack([q @ s / (q.norm() * s.norm()) for s in support])
        weights = torch.exp(scale * cosines) / torch.exp(scale * cosines).sum()
        probs = [weights[task.support_y == c].sum() for c in range(ways)]
        losses.append(-torch.log(probs[int(target)]))
    return torch.stack(losses).mean()


def test_matching_attention_sums_to_one_and_matches_a_hand_computation():
    model, batch = embedding_case()
    algorithm = MatchingNet(InnerLoop(model, CLASSIFICATION), scale=3.0)
    task = batch.task(1)
    params = dict(model.named_parameters())
    attention = algorithm.attention(params, task.support_x, task.query_x)
    torch.testing.assert_close(
        attention.sum(-1), torch.ones(len(task.query_x), dtype=torch.float64)
    )
    support, query = algorithm.embed_episode(params, task.support_x, task.query_x)
    q, s = query[0].detach(), support.detach()
    cos = [float(q @ s[i]) / math.sqrt(float(q @ q) * float(s[i] @ s[i])) for i in range(len(s))]
    exps = [math.exp(3.0 * c) for c in cos]
    expected = torch.tensor([e / sum(exps) for e in exps], dtype=torch.float64)
    torch.testing.assert_close(attention[0], expected)
    log_probs = algorithm.class_scores(params, task.support_x, task.support_y, task.query_x)
    by_hand = [sum(expected[i] for i in range(len(s)) if task.support_y[i] == c) for c in range(3)]
    torch.testing.assert_close(log_probs[0, :3].exp(), torch.stack(by_hand))


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_matching_meta_gradient_matches_reference(strategy):
    model, batch = embedding_case()
    algorithm = MatchingNet(InnerLoop(model, CLASSIFICATION), scale=2.0).double()
    losses, grads = metalab_gradient(algorithm, model, batch, STRATEGIES[strategy])
    expected = reference_gradient(lambda p, t: matching_task_loss(p, t, 2.0), model, batch)
    assert torch.isfinite(torch.cat([g.flatten() for g in grads])).all()
    assert relative_error(grads, expected) < 1e-10


def test_lstm_cell_is_the_standard_lstm():
    torch.manual_seed(1)
    ours, theirs = LSTMCell(3, 4).double(), torch.nn.LSTMCell(3, 4).double()
    with torch.no_grad():
        ours.input_map.weight.copy_(theirs.weight_ih)
        ours.input_map.bias.copy_(theirs.bias_ih + theirs.bias_hh)
        ours.recurrent_map.weight.copy_(theirs.weight_hh)
    x, h, c = (torch.randn(2, n, dtype=torch.float64) for n in (3, 4, 4))
    for a, b in zip(ours(x, h, c), theirs(x, (h, c)), strict=True):
        torch.testing.assert_close(a, b)


def test_full_context_embeddings_follow_the_paper():
    """g = h_fwd + h_bwd + g' (checked with torch's bidirectional LSTM); the attention LSTM
    reads r = sum softmax(h . g) g and adds the query back, K times."""
    torch.manual_seed(2)
    model = without_head(MLP(6, 3, (5,)), (6,)).double()
    algorithm = MatchingNet(InnerLoop(model, CLASSIFICATION), fce=True, processing_steps=3)
    algorithm = algorithm.double()
    dim = model.out_features
    support, query = torch.randn(4, dim, dtype=torch.float64), torch.randn(2, dim).double()
    lstm = torch.nn.LSTM(dim, dim, bidirectional=True).double()
    cells = algorithm.support_context.forward_cell, algorithm.support_context.backward_cell
    with torch.no_grad():
        for suffix, cell in zip(["", "_reverse"], cells, strict=True):
            getattr(lstm, "weight_ih_l0" + suffix).copy_(cell.input_map.weight)
            getattr(lstm, "weight_hh_l0" + suffix).copy_(cell.recurrent_map.weight)
            getattr(lstm, "bias_ih_l0" + suffix).copy_(cell.input_map.bias)
            getattr(lstm, "bias_hh_l0" + suffix).zero_()
    out, _ = lstm(support.unsqueeze(1))
    g = out[:, 0, :dim] + out[:, 0, dim:] + support
    torch.testing.assert_close(algorithm.support_context(support), g)

    cell = algorithm.query_context.cell
    w_x, b_x, w_h = cell.input_map.weight, cell.input_map.bias, cell.recurrent_map.weight
    for row in range(2):
        f_prime = query[row]
        h, c = torch.zeros(dim).double(), torch.zeros(dim).double()
        for _ in range(3):
            a = torch.softmax(g @ h, 0)
            r = (a.unsqueeze(1) * g).sum(0)
            gates = w_x @ f_prime + b_x + w_h @ torch.cat([h, r])
            i, f, gg, o = (
                gates[:dim],
                gates[dim : 2 * dim],
                gates[2 * dim : 3 * dim],
                gates[3 * dim :],
            )
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
            h = torch.sigmoid(o) * torch.tanh(c) + f_prime
        torch.testing.assert_close(algorithm.query_context(query, g)[row], h)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_matching_with_fce_trains_its_lstms_under_every_strategy(strategy):
    model, batch = embedding_case()
    algorithm = MatchingNet(InnerLoop(model, CLASSIFICATION), fce=True, processing_steps=2)
    algorithm = algorithm.double()
    loop_losses, _ = metalab_gradient(algorithm, model, batch, STRATEGIES["loop"])
    loop_grads = [p.grad.clone() for p in algorithm.parameters()]
    losses, _ = metalab_gradient(algorithm, model, batch, STRATEGIES[strategy])
    torch.testing.assert_close(losses, loop_losses)
    grads = [p.grad for p in algorithm.parameters()]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    assert relative_error(grads, loop_grads) < 1e-10


# --- Siamese networks ---------------------------------------------------------------------


def test_siamese_pair_head_is_a_weighted_l1_distance_with_a_sigmoid():
    torch.manual_seed(3)
    model = without_head(MLP(6, 3, (4,)), (6,)).double()
    algorithm = Siamese(InnerLoop(model, CLASSIFICATION)).double()
    a, b = torch.randn(2, 4).double(), torch.randn(3, 4).double()
    alpha, bias = algorithm.pair_head.weighted_l1.weight[0], algorithm.pair_head.weighted_l1.bias
    logits = algorithm.pair_head(a, b)
    for i in range(2):
        for j in range(3):
            by_hand = sum(alpha[k] * abs(a[i, k] - b[j, k]) for k in range(4)) + bias[0]
            torch.testing.assert_close(logits[i, j], by_hand)
            torch.testing.assert_close(torch.sigmoid(logits[i, j]), 1 / (1 + torch.exp(-by_hand)))


def siamese_task_loss(params, task, head):
    support, query = episode_embeddings(params, task.support_x, task.query_x)
    x, y = torch.cat([support, query]), torch.cat([task.support_y, task.query_y])
    alpha, bias = head.weight[0], head.bias[0]
    same, different = [], []
    for i in range(len(x)):
        for j in range(len(x)):
            if i == j:
                continue
            p = torch.sigmoid((alpha * (x[i] - x[j]).abs()).sum() + bias)
            (same if y[i] == y[j] else different).append((p, y[i] == y[j]))
    same_loss = torch.stack([-torch.log(p) for p, _ in same]).mean()
    different_loss = torch.stack([-torch.log(1 - p) for p, _ in different]).mean()
    return 0.5 * same_loss + 0.5 * different_loss


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_siamese_balanced_pair_loss_and_gradient_match_reference(strategy):
    model, batch = embedding_case()
    algorithm = Siamese(InnerLoop(model, CLASSIFICATION)).double()
    losses, grads = metalab_gradient(algorithm, model, batch, STRATEGIES[strategy])
    head = algorithm.pair_head.weighted_l1
    expected = reference_gradient(lambda p, t: siamese_task_loss(p, t, head), model, batch)
    torch.testing.assert_close(
        losses[1], siamese_task_loss(list(model.parameters()), batch.task(1), head)
    )
    assert relative_error(grads, expected) < 1e-10
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


@needs_kernel
@pytest.mark.parametrize("method", ["protonet", "matchingnet", "siamese"])
def test_metric_training_passes_take_the_native_first_block_and_stay_exact(method):
    """A metric method's loss is differentiated once, so its training passes may run Conv-4's
    first block as the native kernel (32 channels: the fewest whose batch norm folds into the
    convolution, in the kernel's lanes of 16); the meta-gradient still equals the reference's,
    whose blocks are F.conv2d / F.batch_norm."""
    model, batch = embedding_case(channels=2 * LANES)
    inner = InnerLoop(model, CLASSIFICATION)
    algorithm = {
        "protonet": lambda: ProtoNet(inner),
        "matchingnet": lambda: MatchingNet(inner, scale=2.0),
        "siamese": lambda: Siamese(inner),
    }[method]().double()
    head = getattr(algorithm, "pair_head", None)
    task_loss = {
        "protonet": protonet_task_loss,
        "matchingnet": lambda p, t: matching_task_loss(p, t, 2.0),
        "siamese": lambda p, t: siamese_task_loss(p, t, head and head.weighted_l1),
    }[method]
    native.reset()
    _, grads = metalab_gradient(algorithm, model, batch, LoopStrategy())
    assert native.record()["passes"] == {"native": len(batch), "composite": 0}
    assert relative_error(grads, reference_gradient(task_loss, model, batch)) < 1e-10


def test_siamese_classifies_by_the_most_similar_support_image():
    model, batch = embedding_case(ways=3, shots=2, queries=3)
    algorithm = Siamese(InnerLoop(model, CLASSIFICATION)).double()
    params = dict(model.named_parameters())
    task = batch.task(2)
    with torch.no_grad():
        support, query = algorithm.embed_episode(params, task.support_x, task.query_x)
        logits = algorithm.pair_head(query, support)
        by_hand = torch.stack([task.support_y[int(row.argmax())] for row in logits])
        _, metric = algorithm.meta_objective(params, *task.__dict__.values())
    assert metric == (by_hand == task.query_y).double().mean()
    assert algorithm.evaluate(params, *task.__dict__.values())["metric"].shape == (1,)


def test_koch_network_has_the_papers_parameter_count():
    cfg = OmegaConf.create({"name": "koch"})
    model = build_model(cfg, (1, 105, 105), 20, head=False)
    siamese = Siamese(InnerLoop(model, CLASSIFICATION))
    count = sum(p.numel() for p in model.parameters()) + sum(
        p.numel() for p in siamese.parameters()
    )
    assert count == 38_951_745 and model.out_features == 4096
    with torch.no_grad():
        out = model(torch.zeros(2, 1, 105, 105))
    assert out.shape == (2, 4096) and ((out > 0) & (out < 1)).all()  # the sigmoid layer
    with pytest.raises(ConfigError, match="dataset.image_size=105"):
        build_model(cfg, (1, 28, 28), 5)


# --- embeddings, heads and ways -----------------------------------------------------------


def test_embedding_models_are_the_backbone_without_its_head():
    cfg = OmegaConf.create({"name": "conv4", "channels": 8, "blocks": 4, "norm": "batch"})
    full = dict(build_model(cfg, (1, 28, 28), 5).named_parameters())
    embedding = build_model(cfg, (1, 28, 28), 5, head=False)
    names = [n for n, _ in embedding.named_parameters()]
    assert names == [n for n in full if not n.startswith("head.")]
    assert embedding.out_features == 8 and embedding(torch.zeros(3, 1, 28, 28)).shape == (3, 8)


def ways_config(name: str, ways: int, test_ways: int):
    return OmegaConf.create(
        {"algorithm": {"name": name}, "dataset": {"task": "classification", "ways": ways,
                                                   "test_ways": test_ways}}
    )  # fmt: skip


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "siamese"])
def test_metric_methods_may_test_on_other_ways_and_shots(name):
    check_head(ways_config(name, 10, 5))
    model, batch = embedding_case(ways=4, shots=3, queries=2)  # trained on 3-way 2-shot above
    loop = InnerLoop(model, CLASSIFICATION)
    algorithm = build_algorithm(OmegaConf.create({"name": name}), loop).double()
    out = LoopStrategy().map(
        algorithm.evaluate, {k: p.detach() for k, p in model.named_parameters()}, batch
    )
    assert out["metric"].shape == (3, 1) and torch.isfinite(out["loss"]).all()


@pytest.mark.parametrize("name", ["metalstm", "maml"])
def test_methods_with_a_fixed_head_refuse_other_test_ways(name):
    with pytest.raises(ConfigError, match=f"algorithm={name} learns a 10-way output layer"):
        check_head(ways_config(name, 10, 5))


@pytest.mark.parametrize("name", ["protonet", "matchingnet", "siamese"])
def test_metric_methods_refuse_regression(name):
    loop = InnerLoop(MLP(1, 1, (4,)), REGRESSION)
    with pytest.raises(ConfigError, match=f"algorithm={name} classifies by comparing"):
        build_algorithm(OmegaConf.create({"name": name}), loop)


# --- Meta-LSTM ----------------------------------------------------------------------------


def test_gradient_preprocessing_is_andrychowicz_et_al():
    p = 10.0
    for z in [3.0, -0.5, 1e-3, -2e-4, 1e-5, -3e-6, 0.0]:
        got = preprocess(torch.tensor([z], dtype=torch.float64), p)[0].tolist()
        if abs(z) >= math.exp(-p):
            expected = [math.log(abs(z)) / p, math.copysign(1.0, z)]
        else:
            expected = [-1.0, math.exp(p) * z]
        assert got == pytest.approx(expected, rel=1e-12, abs=1e-15), z


def sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def paper_update(meta, theta, grad, loss, i_prev, f_prev):
    """Eq. 2-3 of Ravi & Larochelle, one coordinate at a time, in Python floats; the gates see
    [preprocessed gradient (2), preprocessed loss (2), theta_{t-1}, gate_{t-1}]."""
    w_i, b_i = meta.input_gate.weight[0].detach().tolist(), float(meta.input_gate.bias.detach())
    w_f, b_f = meta.forget_gate.weight[0].detach().tolist(), float(meta.forget_gate.bias.detach())

    def pre(z):
        if abs(z) >= math.exp(-10):
            return [math.log(abs(z)) / 10, math.copysign(1.0, z)]
        return [-1.0, math.exp(10) * z]

    new_theta, new_i, new_f = [], [], []
    for k in range(len(theta)):
        features = pre(grad[k]) + pre(loss)
        i = sigmoid(
            sum(w * v for w, v in zip(w_i, [*features, theta[k], i_prev[k]], strict=True)) + b_i
        )
        f = sigmoid(
            sum(w * v for w, v in zip(w_f, [*features, theta[k], f_prev[k]], strict=True)) + b_f
        )
        new_theta.append(f * theta[k] - i * grad[k])
        new_i.append(i)
        new_f.append(f)
    return new_theta, new_i, new_f


def test_meta_lstm_cell_update_is_the_papers_equations():
    torch.manual_seed(4)
    model = MLP(3, 2, (4,)).double()
    meta = MetaLSTM(InnerLoop(model, CLASSIFICATION), inner_steps=1, hidden_size=0).double()
    with torch.no_grad():  # gates away from saturation, so every term matters
        for gate in (meta.input_gate, meta.forget_gate):
            gate.weight.uniform_(-1, 1)
            gate.bias.uniform_(-1, 1)
    n = 7
    theta = torch.randn(n, dtype=torch.float64)
    grad = torch.tensor([0.3, -2.0, 1e-6, -1e-7, 4e-3, 0.0, -0.05], dtype=torch.float64)
    loss = torch.tensor(1.7, dtype=torch.float64)
    i_prev, f_prev = torch.rand(n).double(), torch.rand(n).double()
    new_theta, (i, f), _ = meta.update(theta, grad, loss, (i_prev, f_prev), None)
    expected = paper_update(
        meta, theta.tolist(), grad.tolist(), 1.7, i_prev.tolist(), f_prev.tolist()
    )
    for got, want in zip([new_theta, i, f], expected, strict=True):
        assert got.tolist() == pytest.approx(want, rel=1e-12, abs=1e-14)


def test_meta_lstm_input_layer_is_an_lstm_over_preprocessed_gradient_and_loss():
    torch.manual_seed(5)
    meta = MetaLSTM(InnerLoop(MLP(3, 2, (4,)), CLASSIFICATION), hidden_size=6).double()
    grad, loss = torch.randn(5).double(), torch.tensor(0.8).double()
    x, state = meta.describe(grad, loss, None)
    reference = torch.nn.LSTMCell(4, 6).double()
    cell = meta.input_lstm
    with torch.no_grad():
        reference.weight_ih.copy_(cell.input_map.weight)
        reference.bias_ih.copy_(cell.input_map.bias)
        reference.weight_hh.copy_(cell.recurrent_map.weight)
        reference.bias_hh.zero_()
    inputs = torch.cat([preprocess(grad), preprocess(loss).expand(5, 2)], 1)
    h, c = reference(inputs)
    torch.testing.assert_close(x, h)
    x2, _ = meta.describe(grad, loss, state)
    torch.testing.assert_close(x2, reference(inputs, (h, c))[0])


def meta_lstm_reference_loss(meta, model_params, task, steps):
    """Unroll with torch.autograd (not torch.func) and the equations over flat vectors; the
    learner's gradient and loss enter as constants (no second derivatives)."""
    names = [n for n, _ in meta.inner_loop.model.named_parameters()]
    shapes = [p.shape for p in model_params]

    def forward(flat, x):
        parts, start = [], 0
        for shape in shapes:
            parts.append(flat[start : start + shape.numel()].view(shape))
            start += shape.numel()
        return torch.func.functional_call(
            meta.inner_loop.model, dict(zip(names, parts, strict=True)), (x,)
        )

    theta = torch.cat([p.reshape(-1) for p in model_params])
    i_prev = f_prev = torch.zeros_like(theta)
    for _ in range(steps):
        at = theta.detach().requires_grad_()
        loss = F.cross_entropy(forward(at, task.support_x), task.support_y)
        (grad,) = torch.autograd.grad(loss, at)
        features = torch.cat([preprocess(grad), preprocess(loss.detach()).expand(len(grad), 2)], 1)
        i = torch.sigmoid(
            torch.cat([features, theta[:, None], i_prev[:, None]], 1) @ meta.input_gate.weight[0]
            + meta.input_gate.bias
        )
        f = torch.sigmoid(
            torch.cat([features, theta[:, None], f_prev[:, None]], 1) @ meta.forget_gate.weight[0]
            + meta.forget_gate.bias
        )
        theta, i_prev, f_prev = f * theta - i * grad, i, f
    return F.cross_entropy(forward(theta, task.query_x), task.query_y)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
def test_meta_lstm_meta_gradient_matches_the_first_order_unroll(strategy):
    _, batch = embedding_case()
    batch = batch.slice(0, 2)
    model = Conv4(1, 3, image_size=16, channels=3).double()  # batch norm: part of theta
    meta = MetaLSTM(InnerLoop(model, CLASSIFICATION), inner_steps=3, hidden_size=0).double()
    with torch.no_grad():  # a visible learning rate, so that the steps change theta
        meta.input_gate.bias.fill_(-1.0)
    losses, grads = metalab_gradient(meta, model, batch, STRATEGIES[strategy])
    meta_grads = [p.grad.clone() for p in meta.parameters()]
    leaves = [p.detach().clone().requires_grad_() for p in model.parameters()]
    gates = list(meta.parameters())
    total = sum(
        meta_lstm_reference_loss(meta, leaves, batch.task(i), 3) for i in range(len(batch))
    ) / len(batch)
    expected = torch.autograd.grad(total, leaves + gates)
    assert relative_error(grads, list(expected[: len(leaves)])) < 1e-9
    assert relative_error(meta_grads, list(expected[len(leaves) :])) < 1e-9
    evaluation = meta.evaluate(dict(model.named_parameters()), *batch.task(0).__dict__.values())
    assert evaluation["metric"].shape == (4,)  # before and after each of the 3 steps


# --- presets ------------------------------------------------------------------------------

PRESETS = {
    # Snell et al.: 60-way 1-shot training, 5 queries per class; 5- or 20-way test.
    "protonet_omniglot_5w1s": dict(name="protonet", ways=60, queries=5, test_ways=5, meta_batch=1),
    "protonet_omniglot_20w1s": dict(name="protonet", ways=60, test_ways=20, test_queries=15),
    "matchingnet_omniglot_5w1s": dict(name="matchingnet", ways=5, test_ways=5, fce=False),
    "matchingnet_omniglot_20w1s": dict(name="matchingnet", ways=20, test_ways=20),
    "siamese_omniglot_5w1s": dict(name="siamese", ways=5, test_ways=5, image_size=28),
    "siamese_omniglot_20w1s": dict(name="siamese", ways=5, test_ways=20),
    "siamese_koch_omniglot": dict(name="siamese", image_size=105, split="lake", test_ways=20),
    # Ravi & Larochelle's meta-learner and training: 12 updates, clipping 0.25, Adam 1e-3.
    "metalstm_omniglot_5w1s": dict(
        name="metalstm", ways=5, inner_steps=12, eval_inner_steps=12, hidden_size=20,
        preprocess_p=10.0, grad_clip=0.25, lr=0.001, meta_batch=1,
    ),
    "metalstm_omniglot_20w1s": dict(name="metalstm", ways=20, test_ways=20, grad_clip=0.25),
    # The paper's mini-ImageNet 5-way 1-shot: Conv-4 with 32 filters at 84x84, 12 updates.
    "metalstm_miniimagenet_5w1s": dict(
        name="metalstm", ways=5, shots=1, queries=15, inner_steps=12, grad_clip=0.25,
        image_size=84, split="ravi",
    ),
}  # fmt: skip


@pytest.mark.parametrize("experiment", sorted(PRESETS))
def test_presets_carry_their_papers_settings(experiment):
    from tests.helpers.configs import compose_train

    cfg = compose_train(f"experiment={experiment}")
    flat = {**cfg.algorithm, **cfg.dataset, **cfg.optimizer, "name": cfg.algorithm.name}
    for key, value in PRESETS[experiment].items():
        assert flat[key] == value, key
    if "miniimagenet" in experiment:
        assert cfg.model.name == "conv4" and cfg.model.channels == 32
        assert cfg.dataset.name == "miniimagenet"
    else:
        expected_model = "koch" if "koch" in experiment else "conv4"
        assert cfg.model.name == expected_model and cfg.dataset.name == "omniglot"
    check_head(cfg)
