"""ANIL, Meta-SGD, MAML++ and Reptile: each meta-gradient/update equals the float64 reference,
and each switch does what its config says."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from metalab.algorithms import build_algorithm
from metalab.algorithms.anil import ANIL
from metalab.algorithms.base import Algorithm, TaskObjective
from metalab.algorithms.maml import MAML
from metalab.algorithms.mamlpp import MAMLPlusPlus, multi_step_loss_weights
from metalab.algorithms.metasgd import MetaSGD, escape
from metalab.algorithms.reptile import Reptile
from metalab.errors import ConfigError
from metalab.execution import AutoStrategy, HybridStrategy, LoopStrategy, VmapStrategy
from metalab.execution import threads as task_threads
from metalab.inner_loop import InnerLoop
from metalab.objectives import split_objective
from tests.helpers.cases import conv_case, mlp_case
from tests.helpers.reference import (
    anil_meta_gradient,
    maml_meta_gradient,
    mamlpp_meta_gradient,
    metasgd_meta_gradient,
    relative_error,
    reptile_update,
)


def three_tasks(case):
    """A case of test_meta_gradient cut to three tasks (vmap still runs a partial chunk)."""

    def cut():
        model, forward, kind, batch, lr = case()
        return model, forward, kind, batch.slice(0, 3), lr

    return cut


CASES = {
    "mlp": three_tasks(mlp_case),
    "conv4-batchnorm": three_tasks(conv_case),
    # MAML's Omniglot network: stride-2 convolutions, the head on the mean feature
    "conv4-strided": three_tasks(lambda: conv_case(strided=True)),
}
STRATEGIES = {"loop": LoopStrategy, "vmap": lambda: VmapStrategy(chunk=2)}
BACKWARD = lambda loss: loss.backward()  # noqa: E731  (Reptile writes .grad without it)
# one and several inner steps, second order; first order once
ORDERS = [(1, False), (2, False), (2, True)]


def grad_of(tensor: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(tensor) if tensor.grad is None else tensor.grad.clone()


def meta_gradient(model, algorithm, batch, strategy, extra=()) -> list[torch.Tensor]:
    """The gradient the strategy leaves on the model's parameters, then on ``extra``."""
    model.zero_grad()
    algorithm.zero_grad()
    params = dict(model.named_parameters())
    losses, _ = strategy.meta_gradient(
        algorithm.meta_objective, params, batch, lambda loss: loss.backward()
    )
    assert losses.shape == (len(batch),) and torch.isfinite(losses).all()
    return [grad_of(p) for p in [*model.parameters(), *extra]]


@pytest.mark.parametrize("steps,first_order", ORDERS)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_metasgd_matches_reference(case, strategy, steps, first_order):
    model, forward, kind, batch, lr = CASES[case]()
    algorithm = MetaSGD(InnerLoop(model, kind), steps, lr, steps, lr, first_order=first_order)
    algorithm.double()
    with torch.no_grad():  # distinct rates per element, so a mix-up of shapes cannot pass
        for rate in algorithm.rates.values():
            rate.mul_(torch.empty_like(rate).uniform_(0.5, 1.5))
    rates = [algorithm.rates[escape(n)] for n, _ in model.named_parameters()]
    ours = meta_gradient(model, algorithm, batch, STRATEGIES[strategy](), rates)
    reference = metasgd_meta_gradient(
        forward, list(model.parameters()), rates, batch, kind.loss, steps, first_order
    )
    assert relative_error(ours, reference) < 1e-8
    rate_grads = ours[len(list(model.parameters())) :]
    assert all(g.abs().sum() > 0 for g in rate_grads)  # the rates are meta-learned


@pytest.mark.parametrize("steps,first_order", ORDERS)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_anil_matches_reference(case, strategy, steps, first_order):
    model, forward, kind, batch, lr = CASES[case]()
    algorithm = ANIL(InnerLoop(model, kind), steps, lr, steps, lr, first_order=first_order)
    ours = meta_gradient(model, algorithm, batch, STRATEGIES[strategy]())
    reference = anil_meta_gradient(
        forward, list(model.parameters()), 2, batch, kind.loss, steps, lr, first_order
    )
    assert relative_error(ours, reference) < 1e-8


def test_anil_body_gets_second_order_gradient_through_the_head():
    model, _, kind, batch, lr = CASES["conv4-batchnorm"]()
    second = meta_gradient(model, ANIL(InnerLoop(model, kind), 1, lr, 1, lr), batch, LoopStrategy())
    first = meta_gradient(
        model, ANIL(InnerLoop(model, kind), 1, lr, 1, lr, first_order=True), batch, LoopStrategy()
    )
    body = slice(0, len(second) - 2)
    assert relative_error(first[body], second[body]) > 1e-3


def mamlpp(model, kind, steps, lr, **switches) -> MAMLPlusPlus:
    algorithm = MAMLPlusPlus(InnerLoop(model, kind), steps, lr, steps, lr, **switches).double()
    with torch.no_grad():  # per-step values that differ, so a wrong step index cannot pass
        for rate in algorithm.step_rates.values():
            rate.mul_(torch.empty_like(rate).uniform_(0.5, 1.5))
        for name, value in algorithm.step_bn.items():
            low, high = (0.5, 1.5) if name.endswith("weight") else (-0.5, 0.5)
            value.uniform_(low, high)
    return algorithm


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_mamlpp_with_all_tricks_matches_reference(case, strategy, steps):
    model, forward, kind, batch, lr = CASES[case]()
    per_step_bn = case.startswith("conv4")
    algorithm = mamlpp(model, kind, steps, lr, msl_anneal_steps=2000, per_step_bn=per_step_bn)
    algorithm.on_outer_step(700, 10_000)
    weights = algorithm.loss_weights()
    assert len(set(weights)) == steps  # partly annealed: the last weight differs
    names = [n for n, _ in model.named_parameters()]
    bn = [names.index(n) for n in algorithm.bn_names]
    step_rates = [None if j in bn else algorithm.step_rates[escape(n)] for j, n in enumerate(names)]
    step_bn = [algorithm.step_bn[escape(n)] for n in algorithm.bn_names]
    learnable = [r for r in step_rates if r is not None]
    ours = meta_gradient(model, algorithm, batch, STRATEGIES[strategy](), learnable + step_bn)
    reference = mamlpp_meta_gradient(
        forward, list(model.parameters()), step_rates, bn, step_bn, weights, batch, kind.loss, steps
    )
    assert relative_error(ours, reference) < 1e-8


def mamlpp_reference(model, forward, kind, batch, algorithm, steps, weights):
    """The float64 reference for ``algorithm`` (from ``mamlpp``), and the extra leaves
    (learnable rates, per-step batch norm) in the order ``meta_gradient`` takes them."""
    names = [n for n, _ in model.named_parameters()]
    bn = [names.index(n) for n in algorithm.bn_names]
    step_rates = [None if j in bn else algorithm.step_rates[escape(n)] for j, n in enumerate(names)]
    step_bn = [algorithm.step_bn[escape(n)] for n in algorithm.bn_names]
    extra = [r for r in step_rates if r is not None] + step_bn
    reference = mamlpp_meta_gradient(
        forward, list(model.parameters()), step_rates, bn, step_bn, weights, batch, kind.loss, steps
    )
    return reference, extra


MAMLPP_STRATEGIES = {
    **STRATEGIES,
    "hybrid": lambda: HybridStrategy(memory_budget_mib=1e-6),  # a task per chunk
}


@pytest.mark.parametrize("strategy", sorted(MAMLPP_STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_mamlpp_after_its_multi_step_loss_scores_the_last_step_alone(case, strategy):
    """The authors' code uses the multi-step loss for its first ``multi_step_loss_num_epochs``
    only, then the final step's query loss (weight 1): so does MAML++ from outer step
    ``msl_anneal_steps`` on, under every strategy, hybrid included."""
    model, forward, kind, batch, lr = CASES[case]()
    algorithm = mamlpp(model, kind, 2, lr, msl_anneal_steps=100, per_step_bn=case != "mlp")
    algorithm.on_outer_step(99, 10_000)
    assert algorithm.multi_step_loss_active and split_objective(algorithm.meta_objective) is None
    algorithm.on_outer_step(100, 10_000)
    assert not algorithm.multi_step_loss_active
    assert split_objective(algorithm.meta_objective) is algorithm
    reference, extra = mamlpp_reference(model, forward, kind, batch, algorithm, 2, None)
    ours = meta_gradient(model, algorithm, batch, MAMLPP_STRATEGIES[strategy](), extra)
    assert relative_error(ours, reference) < 1e-8


def test_mamlpp_hybrid_with_two_worker_threads_takes_the_references_gradient(monkeypatch):
    """Worker threads run copies of MAML++ that share its rates and per-step batch norm."""
    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: 2)
    model, forward, kind, batch, lr = CASES["conv4-batchnorm"]()
    algorithm = mamlpp(model, kind, 2, lr, msl_anneal_steps=0)
    reference, extra = mamlpp_reference(model, forward, kind, batch, algorithm, 2, None)
    ours = meta_gradient(model, algorithm, batch, HybridStrategy(memory_budget_mib=1e-6), extra)
    assert relative_error(ours, reference) < 1e-8


def test_auto_chooses_again_when_the_multi_step_loss_ends():
    """Hybrid cannot run the multi-step loss; once it has ended, auto measures it too, and
    a checkpoint's choice keeps the shape it was made for."""
    model, forward, kind, batch, lr = CASES["conv4-batchnorm"]()
    algorithm = mamlpp(model, kind, 2, lr, msl_anneal_steps=3)
    auto = AutoStrategy([LoopStrategy(), HybridStrategy()], min_repeats=1, max_repeats=1)
    algorithm.on_outer_step(2, 10)
    meta_gradient(model, algorithm, batch, auto)
    assert auto.chosen.name == "loop" and set(auto.timings) == {"loop"}
    before = auto.state_dict()
    algorithm.on_outer_step(3, 10)
    reference, extra = mamlpp_reference(model, forward, kind, batch, algorithm, 2, None)
    ours = meta_gradient(model, algorithm, batch, auto, extra)
    assert set(auto.timings) == {"loop", "hybrid"} and auto.chosen_split is True
    assert relative_error(ours, reference) < 1e-8
    resumed = AutoStrategy([LoopStrategy(), HybridStrategy()], min_repeats=1, max_repeats=1)
    resumed.load_state_dict(auto.state_dict())
    meta_gradient(model, algorithm, batch, resumed)
    assert resumed.chosen.name == auto.chosen.name and resumed.timings == auto.timings
    old = AutoStrategy([LoopStrategy(), HybridStrategy()], min_repeats=1, max_repeats=1)
    old.load_state_dict({k: v for k, v in before.items() if k != "chosen_split"})
    meta_gradient(model, algorithm, batch, old)  # no shape recorded: the choice stands
    assert old.chosen.name == "loop" and old.timings == before["timings"]


ALL_OFF = dict(multi_step_loss=False, learnable_lr=False, per_step_bn=False, first_order_steps=0)


@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_mamlpp_with_all_tricks_off_is_maml_exactly(case, strategy):
    model, _, kind, batch, lr = CASES[case]()
    plain = mamlpp(model, kind, 2, lr, **ALL_OFF)
    assert list(plain.parameters()) == []
    ours = meta_gradient(model, plain, batch, STRATEGIES[strategy]())
    maml = meta_gradient(
        model, MAML(InnerLoop(model, kind), 2, lr, 2, lr), batch, STRATEGIES[strategy]()
    )
    assert all(torch.equal(a, b) for a, b in zip(ours, maml, strict=True))


def test_mamlpp_derivative_order_annealing_switches_at_the_configured_step():
    model, forward, kind, batch, lr = CASES["mlp"]()
    algorithm = mamlpp(model, kind, 2, lr, **{**ALL_OFF, "first_order_steps": 10})
    reference = {
        fo: maml_meta_gradient(forward, list(model.parameters()), batch, kind.loss, 2, lr, fo)
        for fo in (True, False)
    }
    for outer_step, first_order in [(0, True), (9, True), (10, False), (500, False)]:
        algorithm.on_outer_step(outer_step, 1000)
        ours = meta_gradient(model, algorithm, batch, LoopStrategy())
        assert relative_error(ours, reference[first_order]) < 1e-8, outer_step


def test_multi_step_loss_weights_anneal_to_the_last_step():
    assert multi_step_loss_weights(5, 0, 100) == pytest.approx([0.2] * 5)
    middle = multi_step_loss_weights(5, 50, 100)
    assert middle[:-1] == pytest.approx([0.1] * 4) and middle[-1] == pytest.approx(0.6)
    end = multi_step_loss_weights(5, 10_000, 100)
    assert end[:-1] == pytest.approx([0.006] * 4) and end[-1] == pytest.approx(1 - 4 * 0.006)
    for step in (0, 37, 100, 10_000):
        assert sum(multi_step_loss_weights(5, step, 100)) == pytest.approx(1.0)


def test_mamlpp_switches_create_and_route_their_parameters():
    model, _, kind, batch, lr = CASES["conv4-batchnorm"]()
    algorithm = mamlpp(model, kind, 3, lr)
    assert set(algorithm.step_bn) == {escape(n) for n in algorithm.bn_names}
    assert len(algorithm.bn_names) == 8  # weight and bias of 4 norm layers
    assert all(
        v.shape[0] == 3 for v in [*algorithm.step_bn.values(), *algorithm.step_rates.values()]
    )
    assert not set(algorithm.step_rates) & set(algorithm.step_bn)  # norm parameters do not adapt
    meta_gradient(model, algorithm, batch, LoopStrategy())
    params = dict(model.named_parameters())
    assert all(params[n].grad is None for n in algorithm.bn_names)  # replaced by per-step ones
    assert all(v.grad.abs().sum() > 0 for v in algorithm.step_bn.values())
    no_lr = mamlpp(model, kind, 3, lr, learnable_lr=False)
    assert len(no_lr.step_rates) == 0


def test_mamlpp_per_step_bn_needs_batch_norm():
    model, _, kind, _, lr = mlp_case()
    with pytest.raises(ConfigError, match="per_step_bn=false"):
        MAMLPlusPlus(InnerLoop(model, kind), 1, lr, 1, lr, per_step_bn=True)


# --- Reptile ---


def reptile(model, kind, steps, lr, **kwargs) -> Reptile:
    return Reptile(InnerLoop(model, kind), steps, lr, 2, lr, anneal="none", **kwargs)


@pytest.mark.parametrize(
    "steps,optimizer,inner_batch",
    [(1, "sgd", None), (3, "sgd", 4), (3, "adam", None), (2, "adam", 4)],
)
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_reptile_update_equals_the_formula(case, strategy, steps, optimizer, inner_batch):
    model, forward, kind, batch, lr = CASES[case]()
    lr = 0.01 if optimizer == "adam" else lr
    kwargs = dict(inner_optimizer=optimizer, inner_batch=inner_batch, outer_step_size=0.7)
    kwargs["adam_state"] = "fresh"  # the carried state has a test of its own, below
    algorithm = reptile(model, kind, steps, lr, **kwargs)
    order = reptile(model, kind, steps, lr, **kwargs).task_data(batch)  # same seed, same order
    before = [p.detach().clone() for p in model.parameters()]
    expected = reptile_update(
        forward, before, order.support_x, order.support_y, kind.loss, steps, lr, inner_batch,
        optimizer, 0.7, 0.999, 1e-8,
    )  # fmt: skip
    model.zero_grad()
    losses, metrics = algorithm.outer_step(
        dict(model.named_parameters()), batch, STRATEGIES[strategy](), BACKWARD
    )
    assert losses.shape == metrics.shape == (len(batch),)
    torch.optim.SGD(model.parameters(), lr=1.0).step()  # theta - 1 * eps * (theta - mean W)
    assert relative_error(list(model.parameters()), expected) < 1e-8
    assert relative_error(list(model.parameters()), before) > 1e-4


def test_reptile_minibatches_are_shuffled_passes_over_each_task():
    model, _, kind, batch, lr = conv_case()
    data = reptile(model, kind, 3, lr, inner_batch=4).task_data(batch)
    all_x = torch.cat([batch.support_x, batch.query_x], 1)  # 12 examples per task
    for task in range(len(batch)):
        flat = all_x[task].flatten(1)
        taken = [int((flat == row).all(1).nonzero()) for row in data.support_x[task].flatten(1)]
        assert sorted(taken) == list(range(12)) and taken != list(range(12))


def test_reptile_epsilon_anneals_linearly_to_zero():
    model, _, kind, _, lr = mlp_case()
    algorithm = Reptile(InnerLoop(model, kind), 1, lr, 1, lr, outer_step_size=0.5)
    seen = []
    for step in (0, 250, 500, 1000):
        algorithm.on_outer_step(step, 1000)
        seen.append(algorithm.epsilon)
    assert seen == pytest.approx([0.5, 0.375, 0.25, 0.0])
    constant = reptile(model, kind, 1, lr, outer_step_size=0.5)
    constant.on_outer_step(900, 1000)
    assert constant.epsilon == 0.5


@pytest.mark.parametrize("case", sorted(CASES))
def test_non_transductive_prediction_sees_only_the_support_set(case):
    model, forward, kind, batch, _ = CASES[case]()
    loop = InnerLoop(model, kind)
    params = {k: p.detach() for k, p in model.named_parameters()}
    sx, qx = batch.support_x[0], batch.query_x[0]
    plist = list(params.values())
    each = torch.stack([forward(plist, torch.cat([sx, q[None]]))[-1] for q in qx])
    together = forward(plist, qx)
    torch.testing.assert_close(loop.predict_query(params, sx, qx, transductive=False), each)
    torch.testing.assert_close(loop.predict_query(params, sx, qx, transductive=True), together)
    differs = not torch.allclose(each, together)
    assert differs == case.startswith("conv4")  # only batch norm couples the examples


def test_reptile_evaluation_follows_the_transductive_switch():
    model, _, kind, batch, lr = conv_case()
    runs = {
        t: reptile(model, kind, 1, lr, transductive=t).evaluate(
            {k: p.detach() for k, p in model.named_parameters()}, *batch.task(0).__dict__.values()
        )
        for t in (True, False)
    }
    assert runs[True]["loss"].shape == (3,)  # before adaptation and after each of 2 steps
    assert not torch.allclose(runs[True]["loss"], runs[False]["loss"])


def test_reptile_has_no_differentiable_meta_objective():
    """Its outer step is its own (a pseudo-gradient), not a strategy over a task objective."""
    model, _, kind, _, lr = mlp_case()
    algorithm = reptile(model, kind, 1, lr)
    assert isinstance(algorithm, Algorithm) and not isinstance(algorithm, TaskObjective)


def test_unknown_algorithm_setting_is_refused_with_the_known_ones():
    model, _, kind, _, _ = mlp_case()
    cfg = OmegaConf.create(
        dict(name="anil", inner_steps=1, inner_lr=0.1, eval_inner_steps=1, eval_inner_lr=0.1,
             first_order=False, meta_batch=4, inner_batch=3)
    )  # fmt: skip
    with pytest.raises(ConfigError, match="has no setting inner_batch"):
        build_algorithm(cfg, InnerLoop(model, kind))


@pytest.mark.parametrize("case", sorted(CASES))
def test_reptile_carried_adam_state_runs_on_across_tasks_and_meta_batches(case):
    """The authors' code: one Adam state for every task and step; two meta-batches in a row
    equal the float64 reference that carries v and t through all of them."""
    model, forward, kind, batch, _ = CASES[case]()
    kwargs = dict(inner_optimizer="adam", inner_batch=4, outer_step_size=0.7)
    algorithm = reptile(model, kind, 2, 0.01, adam_state="carried", **kwargs)
    order = reptile(model, kind, 2, 0.01, **kwargs).task_data(batch)
    carried = {"v": None, "t": 0}
    theta = [p.detach().clone() for p in model.parameters()]
    carried["v"] = [torch.zeros_like(p) for p in theta]
    for _ in range(2):  # the same batch twice: the state, not the data, changes
        expected = reptile_update(
            forward, theta, order.support_x, order.support_y, kind.loss, 2, 0.01, 4, "adam",
            0.7, 0.999, 1e-8, carried=carried,
        )  # fmt: skip
        model.zero_grad()
        algorithm.outer_step(dict(model.named_parameters()), batch, STRATEGIES["loop"](), BACKWARD)
        torch.optim.SGD(model.parameters(), lr=1.0).step()
        assert relative_error(list(model.parameters()), expected) < 1e-8
        theta = [p.detach().clone() for p in model.parameters()]
    assert algorithm.carried_t == 2 * len(batch) * 2
    assert relative_error(list(algorithm.carried_v.values()), carried["v"]) < 1e-8
    fresh = reptile(model, kind, 2, 0.01, adam_state="fresh", **kwargs)
    model.zero_grad()
    fresh.outer_step(dict(model.named_parameters()), batch, STRATEGIES["loop"](), BACKWARD)
    assert fresh.carried_v is None  # nothing runs on between tasks


def test_reptile_evaluation_starts_from_the_carried_state_and_leaves_it():
    model, _, kind, batch, _ = conv_case()
    algorithm = reptile(model, kind, 2, 0.01, inner_optimizer="adam", adam_state="carried")
    params = {k: p.detach() for k, p in model.named_parameters()}
    task = batch.task(0).__dict__.values()
    fresh_scores = algorithm.evaluate(params, *task)["loss"]
    model.zero_grad()
    algorithm.outer_step(dict(model.named_parameters()), batch, STRATEGIES["loop"](), BACKWARD)
    state = {k: v.clone() for k, v in algorithm.carried_v.items()}, algorithm.carried_t
    carried_scores = algorithm.evaluate(params, *task)["loss"]
    assert not torch.allclose(fresh_scores, carried_scores)  # the state changes the steps
    assert algorithm.carried_t == state[1]
    assert all(torch.equal(algorithm.carried_v[k], v) for k, v in state[0].items())
    # the graph-free path (fast_eval) and the per-task path take the same steps
    per_task = algorithm.evaluate_per_task(params, *task)["loss"]
    torch.testing.assert_close(carried_scores, per_task, rtol=1e-5, atol=1e-6)


def test_reptile_carried_state_travels_in_checkpoints(tmp_path):
    """Saved with the run's other state (``checkpoint["metalab"]["algorithm"]``) and loadable
    with ``weights_only=True``: a resumed run continues the same Adam state."""
    from metalab.module import algorithm_state, load_algorithm_state

    model, _, kind, batch, _ = conv_case()
    trained = reptile(model, kind, 2, 0.01, inner_optimizer="adam", adam_state="carried")
    trained.outer_step(dict(model.named_parameters()), batch, STRATEGIES["loop"](), BACKWARD)
    torch.save({"metalab": {"algorithm": algorithm_state(trained)}}, tmp_path / "x.ckpt")
    saved = torch.load(tmp_path / "x.ckpt", weights_only=True)
    resumed = reptile(model, kind, 2, 0.01, inner_optimizer="adam", adam_state="carried")
    load_algorithm_state(resumed, saved["metalab"])
    assert resumed.carried_t == trained.carried_t == 2 * len(batch)
    assert all(torch.equal(resumed.carried_v[k], v) for k, v in trained.carried_v.items())
