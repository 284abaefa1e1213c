"""The algorithm contract (``metalab.algorithms.base``): every algorithm fulfils it, the
LightningModule reaches an algorithm through it alone, and the adapt-then-score members of
the MAML family (ANIL, Meta-SGD, Meta-LSTM) run ``strategy=hybrid`` with the loop's
meta-gradient (float64), their own meta-learned parameters included."""

from __future__ import annotations

import ast
import inspect

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir

from metalab import module as module_source
from metalab.algorithms import ALGORITHMS, algorithms_for, build_algorithm, has_fixed_head
from metalab.algorithms.anil import ANIL
from metalab.algorithms.base import AdaptingAlgorithm, Algorithm, Replay, TaskObjective
from metalab.algorithms.maml import MAML
from metalab.algorithms.mamlpp import MAMLPlusPlus
from metalab.algorithms.metalstm import MetaLSTM
from metalab.algorithms.metasgd import MetaSGD
from metalab.assembly import build_data, build_module
from metalab.data.tasks import TaskBatch
from metalab.execution import HybridStrategy, LoopStrategy
from metalab.execution import threads as task_threads
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION
from metalab.models.conv4 import Conv4
from metalab.models.embedding import without_head
from metalab.objectives import split_objective
from metalab.paths import config_dir

BACKWARD = lambda loss: loss.backward()  # noqa: E731


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose("train", overrides=list(overrides))


def image_batch(dtype: torch.dtype = torch.float32, tasks: int = 3) -> TaskBatch:
    """Random 3-way tasks of 16x16 images, 2 shots and 2 queries per class."""
    generator = torch.Generator().manual_seed(1)

    def images(per_class: int) -> torch.Tensor:
        return torch.rand(tasks, 3 * per_class, 1, 16, 16, generator=generator, dtype=dtype)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(3).repeat_interleave(per_class).expand(tasks, -1).clone()

    return TaskBatch(images(2), labels(2), images(2), labels(2))


def tiny_model(head: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    model = Conv4(1, 3, image_size=16, channels=4)
    return model if head else without_head(model, (1, 16, 16))


@pytest.mark.parametrize("name", algorithms_for("classification"))
def test_every_algorithm_fulfils_the_contract(name):
    """Built from its own config (inner steps cut to 1), each algorithm trains a step,
    evaluates a task, replays one and saves its state through the contract alone (MAML-RL,
    on rollouts instead of image episodes: tests/gradients/test_maml_rl.py)."""
    cls = ALGORITHMS[name]
    assert issubclass(cls, Algorithm) and not cls.__abstractmethods__
    assert has_fixed_head(name) is cls.fixed_head
    cfg = compose_train(f"algorithm={name}").algorithm
    for key in ("inner_steps", "eval_inner_steps"):
        if key in cfg:
            cfg[key] = 1
    model = tiny_model(cls.fixed_head)
    algorithm = build_algorithm(cfg, InnerLoop(model, CLASSIFICATION))
    batch = image_batch()
    params = dict(model.named_parameters())
    algorithm.on_outer_step(0, 10)
    losses, metrics = algorithm.outer_step(params, batch, LoopStrategy(), BACKWARD)
    assert losses.shape == metrics.shape == (len(batch),) and torch.isfinite(losses).all()
    # (MAML++'s per-step batch-norm parameters stand in for the model's)
    grads = [p.grad for p in [*model.parameters(), *algorithm.parameters()] if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    steps = algorithm.eval_inner_steps
    assert steps == (1 if cls.fixed_head else 0)  # metric methods: no inner loop
    task = batch.task(0)
    detached = {k: p.detach() for k, p in params.items()}
    with torch.enable_grad():
        scores = algorithm.evaluate(detached, *vars(task).values())
    assert scores["metric"].shape == scores["loss"].shape == (steps + 1,)
    replay = algorithm.replay(params, batch, 0)
    assert isinstance(replay, Replay) and replay.loss == pytest.approx(float(losses[0]))
    assert isinstance(algorithm.checkpoint_state(), dict)
    assert (algorithm.inner_gradient(params, task.support_x, task.support_y) is None) is (
        not cls.fixed_head
    )


def test_the_module_does_not_probe_the_algorithm():
    """No hasattr/getattr on the algorithm in module.py: what it may call is the contract."""
    tree = ast.parse(inspect.getsource(module_source))
    probes = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in ("hasattr", "getattr")
        and "algorithm" in ast.unparse(node.args[0])
    ]
    assert probes == []


class Pretraining(Algorithm):
    """The smallest algorithm: no adaptation, the query loss at the meta-parameters; it
    counts what the trainer calls."""

    def __init__(self, inner_loop: InnerLoop) -> None:
        super().__init__()
        self.inner_loop = inner_loop
        self.calls: dict[str, int] = {}
        self.restored: dict | None = None

    def count(self, what: str) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1

    def on_outer_step(self, step: int, total_steps: int) -> None:
        self.count("on_outer_step")

    def scores(self, params, x, y) -> tuple[torch.Tensor, torch.Tensor]:
        prediction = self.inner_loop.predict(params, x)
        kind = self.inner_loop.kind
        return kind.loss(prediction, y), kind.metric(prediction.detach(), y)

    def outer_step(self, params, batch, strategy, backward):
        self.count("outer_step")
        queries = zip(batch.query_x, batch.query_y, strict=True)
        pairs = [self.scores(params, x, y) for x, y in queries]
        losses = torch.stack([loss for loss, _ in pairs])
        backward(losses.mean())
        return losses.detach(), torch.stack([metric for _, metric in pairs])

    def evaluate(self, params, support_x, support_y, query_x, query_y, score_at=None):
        self.count("evaluate")
        with torch.no_grad():
            loss, metric = self.scores(params, query_x, query_y)
        return {"loss": loss.unsqueeze(0), "metric": metric.unsqueeze(0)}

    def replay(self, params, batch, task):
        return Replay(float(self.scores(params, batch.query_x[task], batch.query_y[task])[0]))

    def checkpoint_state(self) -> dict:
        return {"outer_steps": self.calls.get("outer_step", 0)}

    def load_checkpoint_state(self, state: dict) -> None:
        self.restored = state


def test_the_trainer_reaches_an_algorithm_through_the_contract_alone(tmp_path):
    """A class with only the contract's methods trains, validates, tests and checkpoints
    through MetaLearner and a real Lightning Trainer."""
    cfg = compose_train("debug=tiny")
    data, in_shape, out_features = build_data(cfg)
    module = build_module(cfg, in_shape, out_features)
    spy = module.algorithm = Pretraining(InnerLoop(module.model, module.kind))
    trainer = pl.Trainer(
        max_steps=2,
        val_check_interval=1,
        limit_val_batches=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        inference_mode=False,
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert spy.calls["outer_step"] == spy.calls["on_outer_step"] == 2
    assert spy.calls["evaluate"] >= 3  # validation after each step, then the test tasks
    assert module.test_summary["per_step"][0]["step"] == 0
    trainer.save_checkpoint(tmp_path / "x.ckpt")
    saved = torch.load(tmp_path / "x.ckpt", weights_only=False)
    assert saved["metalab"]["algorithm"] == {"outer_steps": 2}
    module.on_load_checkpoint(saved)
    assert spy.restored == {"outer_steps": 2}


def relative_error(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    num = sum(float((x - y).pow(2).sum()) for x, y in zip(a, b, strict=True))
    return (num / sum(float(y.pow(2).sum()) for y in b)) ** 0.5


def conv_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return Conv4(1, 3, image_size=16, channels=4).double()


def meta_lstm(loop: InnerLoop) -> MetaLSTM:
    meta = MetaLSTM(loop, inner_steps=2, hidden_size=3)
    with torch.no_grad():  # a visible learning rate, so that the steps change theta
        meta.input_gate.bias.fill_(-1.0)
    return meta


def meta_sgd(loop: InnerLoop) -> MetaSGD:
    algorithm = MetaSGD(loop, 2, 0.4, 2, 0.4)
    with torch.no_grad():  # distinct rates per element
        for rate in algorithm.rates.values():
            rate.mul_(torch.empty_like(rate).uniform_(0.5, 1.5))
    return algorithm


HYBRID_ALGORITHMS = {
    "maml": lambda loop: MAML(loop, 2, 0.4, 2, 0.4),
    "anil": lambda loop: ANIL(loop, 2, 0.4, 2, 0.4),
    "anil-first-order": lambda loop: ANIL(loop, 2, 0.4, 2, 0.4, first_order=True),
    "metasgd": meta_sgd,
    "metalstm": meta_lstm,
}


def hybrid_gradient(name: str, strategy) -> tuple[list[torch.Tensor], torch.nn.Module]:
    model = conv_model()
    torch.manual_seed(1)
    algorithm = HYBRID_ALGORITHMS[name](InnerLoop(model, CLASSIFICATION)).double()
    assert split_objective(algorithm.meta_objective) is algorithm  # adapt, then score
    params = dict(model.named_parameters())
    strategy.meta_gradient(algorithm.meta_objective, params, image_batch(torch.float64), BACKWARD)
    learned = [*model.parameters(), *algorithm.parameters()]
    return [torch.zeros_like(p) if p.grad is None else p.grad for p in learned], model


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(HYBRID_ALGORITHMS))
def test_adapt_then_score_algorithms_take_the_loops_meta_gradient_under_hybrid(
    monkeypatch, name, workers
):
    """Several workers each run their own copy of the model (ANIL's body and head too) and
    return the gradient of what the algorithm meta-learns (Meta-SGD's rates, Meta-LSTM's
    gates) as well as the model's."""
    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: workers)
    loop, _ = hybrid_gradient(name, LoopStrategy())
    hybrid, model = hybrid_gradient(name, HybridStrategy(memory_budget_mib=1e-6))
    assert relative_error(hybrid, loop) < 1e-8
    assert all(float(g.abs().sum()) > 0 for g in loop[len(list(model.parameters())) :])


def test_mamlpp_keeps_its_multi_step_objective_out_of_hybrid():
    """MAML++ scores the query set after every step: not adapt-then-score, so hybrid and
    auto's trial of it pass it by; it still scores with the shared query function."""
    algorithm = MAMLPlusPlus(InnerLoop(conv_model(), CLASSIFICATION), 2, 0.4, 2, 0.4)
    assert isinstance(algorithm, AdaptingAlgorithm)
    assert split_objective(algorithm.meta_objective) is None
    assert type(algorithm).query_objective is AdaptingAlgorithm.query_objective


def test_only_task_objectives_offer_a_meta_objective():
    """Reptile's outer step is its own update; the others are a strategy over an objective."""
    for name, cls in ALGORITHMS.items():
        outer_step_only = name in ("reptile", "imaml", "maml_rl")  # writes its own update
        assert issubclass(cls, TaskObjective) is not outer_step_only, name
        assert hasattr(cls, "meta_objective") is not outer_step_only, name


def test_every_algorithm_has_a_task_kind_and_is_refused_on_another():
    """Each algorithm names the kinds of task it learns from; the config check refuses an
    algorithm on a data set of another kind before any data, naming the ones that fit."""
    from metalab.errors import ConfigError
    from metalab.preflight import check_config

    assert sorted(ALGORITHMS) == sorted(
        set(algorithms_for("classification")) | set(algorithms_for("reinforcement"))
    )
    assert algorithms_for("reinforcement") == ["maml_rl"]
    refusal = r"maml_rl cannot learn from dataset=omniglot .*\|navigation2d, or one of anil"
    with pytest.raises(ConfigError, match=refusal):
        check_config(compose_train("algorithm=maml_rl", "dataset=omniglot"))
    with pytest.raises(ConfigError, match=r"dataset=navigation2d .*one of maml_rl for dataset"):
        check_config(compose_train("experiment=maml_rl_navigation2d", "algorithm=maml"))
