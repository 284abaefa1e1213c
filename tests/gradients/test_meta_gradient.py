"""Every execution strategy's MAML/FOMAML meta-gradient equals the float64 per-task reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from metalab.algorithms.fomaml import FOMAML
from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError
from metalab.execution import AutoStrategy, HybridStrategy, LoopStrategy, VmapStrategy
from metalab.inner_loop import InnerLoop
from metalab.models.layout import apply_memory_format
from metalab.models.norm import BatchStatNorm
from metalab.native import fused_first_block
from tests.helpers.cases import SleepyLoop, conv_case, metalab_meta_gradient, mlp_case
from tests.helpers.reference import maml_meta_gradient, relative_error

CL = torch.channels_last

STRATEGIES = {
    "loop": LoopStrategy,
    "vmap": lambda: VmapStrategy(chunk=2),
    "vmap-sized": lambda: VmapStrategy(chunk=None, memory_budget_mib=1e-6),
    "hybrid": lambda: HybridStrategy(memory_budget_mib=1e9),
    "hybrid-chunked": lambda: HybridStrategy(memory_budget_mib=1e-6),
    "auto": lambda: AutoStrategy(
        [LoopStrategy(), VmapStrategy(chunk=3)], min_repeats=1, max_repeats=1
    ),
}


def channels_last_case():
    model, *rest = conv_case()
    assert apply_memory_format(model, "channels_last")
    return model, *rest


CASES = {
    "mlp": mlp_case,
    "conv4-batchnorm": conv_case,
    "conv4-nonorm": lambda: conv_case("none"),
    "conv4-channels-last": channels_last_case,
    # enough channels for the first block to fold its batch norm (metalab.models.folded_norm)
    "conv4-folded-norm": lambda: conv_case(channels=20),
    # and whole lanes of the native kernel: hybrid's query passes pool with it
    "conv4-fused-first-block": lambda: conv_case(channels=32),
    # MAML's Omniglot network: stride-2 convolutions, the head on the mean feature
    "conv4-strided": lambda: conv_case(strided=True),
    "conv4-strided-nonorm": lambda: conv_case("none", strided=True),
    "conv4-strided-folded-norm": lambda: conv_case(channels=20, strided=True),
}


@pytest.mark.parametrize("first_order", [False, True], ids=["maml", "fomaml"])
@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("strategy", sorted(STRATEGIES))
@pytest.mark.parametrize("case", sorted(CASES))
def test_meta_gradient_matches_reference(case, strategy, steps, first_order):
    model, forward, kind, batch, lr = CASES[case]()
    ours = metalab_meta_gradient(model, kind, batch, STRATEGIES[strategy](), steps, lr, first_order)
    plain = [p.detach().contiguous().requires_grad_() for p in model.parameters()]
    reference = maml_meta_gradient(forward, plain, batch, kind.loss, steps, lr, first_order)
    assert relative_error(ours, reference) < 1e-8


@pytest.mark.parametrize("case", sorted(CASES))
def test_first_order_differs_from_second_order(case):
    model, _, kind, batch, lr = CASES[case]()
    second = metalab_meta_gradient(model, kind, batch, LoopStrategy(), 1, lr, False)
    first = metalab_meta_gradient(model, kind, batch, LoopStrategy(), 1, lr, True)
    assert relative_error(first, second) > 1e-3


def test_decomposed_batch_norm_equals_native_batch_norm():
    from metalab.models.norm import decomposed_batch_norm

    norm = BatchStatNorm(3).double()
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-1, 1)
    x = torch.randn(4, 3, 5, 5, dtype=torch.float64)
    native = F.batch_norm(x, None, None, norm.weight, norm.bias, training=True)
    with decomposed_batch_norm():
        decomposed = norm(x)
    torch.testing.assert_close(decomposed, native)
    torch.testing.assert_close(norm(x), native)


@pytest.mark.parametrize("slow_first", [True, False])
def test_auto_keeps_the_candidate_it_measured_fastest(slow_first):
    model, _, kind, batch, lr = mlp_case()
    slow, fast = SleepyLoop(0.3, "slow"), SleepyLoop(0.0, "fast")
    auto = AutoStrategy([slow, fast] if slow_first else [fast, slow], min_seconds=0.0)
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
    assert auto.chosen is fast and auto.name == "auto -> fast"
    assert set(auto.timings) == {"slow", "fast"}


def test_auto_chooses_the_per_task_map_apart_from_the_meta_gradient():
    """Reptile's training and every evaluation go through map: auto times it on its own."""
    model, _, kind, batch, lr = mlp_case()
    algorithm = MAML(InnerLoop(model, kind), 1, lr, 1, lr)
    params = {k: p.detach() for k, p in model.named_parameters()}
    slow, fast = SleepyLoop(0.3, "slow"), SleepyLoop(0.0, "fast")
    auto = AutoStrategy([slow, fast], min_seconds=0.0)
    with torch.enable_grad():
        mapped = auto.map(algorithm.evaluate, params, batch)
    assert auto.chosen is None and auto.chosen_map is fast
    assert set(auto.map_timings) == {"slow", "fast"} and auto.name == "auto -> fast"
    with torch.enable_grad():
        reference = LoopStrategy().map(algorithm.evaluate, params, batch)
    for key, value in reference.items():
        torch.testing.assert_close(mapped[key], value)
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
    assert auto.chosen is fast and auto.chosen_map is fast


def test_auto_keeps_both_choices_across_a_checkpoint():
    loop, vmap = LoopStrategy(), VmapStrategy(chunk=3)
    auto = AutoStrategy([loop, vmap])
    auto.chosen, auto.timings = loop, {"loop": 2.0}
    auto.chosen_map, auto.map_timings = vmap, {"vmap(chunk=3)": 9.0, "loop": 2.0}
    state = auto.state_dict()
    vmap.chunk = None
    resumed_loop, resumed_vmap = LoopStrategy(), VmapStrategy(chunk=None)
    resumed = AutoStrategy([resumed_loop, resumed_vmap])
    resumed.load_state_dict(state)
    assert resumed.chosen is resumed_loop and resumed.chosen_map is resumed_vmap
    assert resumed_vmap.chunk == 3 and resumed.map_timings == auto.map_timings
    assert resumed.name == "auto -> loop (per-task maps: vmap(chunk=3))"
    earlier = AutoStrategy([LoopStrategy(), VmapStrategy()])  # a checkpoint without a map
    earlier.load_state_dict({"chosen": 0, "chunk": None, "timings": {"loop": 1.0}})
    assert earlier.chosen is earlier.candidates[0] and earlier.chosen_map is None


def test_auto_maps_a_convolutional_model_on_the_cpu_with_the_loop_untimed():
    model, _, kind, batch, lr = conv_case()
    algorithm = MAML(InnerLoop(model, kind), 1, lr, 1, lr)
    params = {k: p.detach() for k, p in model.named_parameters()}
    auto = AutoStrategy([LoopStrategy(), VmapStrategy(chunk=None, memory_budget_mib=1e9)])
    with torch.enable_grad():
        auto.map(algorithm.evaluate, params, batch)
    assert auto.chosen_map is auto.candidates[0] and set(auto.map_timings) == {"loop"}


@pytest.mark.parametrize("channels", [4, 20], ids=["layers", "folded-norm"])
def test_channels_last_reaches_every_block(channels):
    """The layout switch must hold past the one-channel first convolution."""
    model, *_ = conv_case(channels=channels)
    apply_memory_format(model, "channels_last")
    seen = []
    for block in model.features:
        block.register_forward_hook(
            lambda m, inputs, out: seen.append(out.is_contiguous(memory_format=CL))
        )
    model(torch.rand(4, 1, 16, 16, dtype=torch.float64))
    assert seen == [True] * 4


def test_vmap_chunk_is_sized_to_its_memory_budget():
    model, _, kind, batch, lr = conv_case()
    algorithm = MAML(InnerLoop(model, kind), 1, lr, 1, lr)
    params = dict(model.named_parameters())
    roomy = VmapStrategy(chunk=None, memory_budget_mib=1e9)
    tight = VmapStrategy(chunk=None, memory_budget_mib=1e-6)
    assert roomy.size_chunk(algorithm.meta_objective, params, batch) == len(batch)
    assert tight.size_chunk(algorithm.meta_objective, params, batch) == 1
    assert roomy.task_mib is not None and roomy.task_mib >= 0


def test_auto_skips_a_vmap_that_fits_one_task_per_chunk():
    model, _, kind, batch, lr = conv_case()
    loop, tight = LoopStrategy(), VmapStrategy(chunk=None, memory_budget_mib=1e-6)
    auto = AutoStrategy([loop, tight], min_repeats=1, max_repeats=1)
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
    assert auto.chosen is loop and set(auto.timings) == {"loop"}


def test_auto_tries_vmap_for_an_mlp_but_not_for_convolutions_on_the_cpu():
    """vmap wins for small MLPs on a CPU (sinusoid) and loses for Conv-4 at 3.6-5x memory."""
    for case, tried in ((mlp_case, True), (conv_case, False)):
        model, _, kind, batch, lr = case()
        roomy = VmapStrategy(chunk=None, memory_budget_mib=1e9)
        auto = AutoStrategy([LoopStrategy(), roomy], min_repeats=1, max_repeats=1)
        metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
        assert (roomy.name in auto.timings) is tried, case.__name__


def test_hybrid_refuses_an_objective_that_is_not_adapt_then_score():
    """An algorithm that overrides meta_objective (MAML++'s multi-step loss) is opaque."""

    class MultiStep(MAML):
        def meta_objective(self, params, support_x, support_y, query_x, query_y):
            return super().meta_objective(params, support_x, support_y, query_x, query_y)

    model, _, kind, batch, lr = mlp_case()
    algorithm = MultiStep(InnerLoop(model, kind), 1, lr, 1, lr)
    params = dict(model.named_parameters())
    with pytest.raises(ConfigError, match="strategy=hybrid needs an algorithm"):
        HybridStrategy().meta_gradient(algorithm.meta_objective, params, batch, lambda _: None)
    auto = AutoStrategy([LoopStrategy(), HybridStrategy()], min_repeats=1, max_repeats=1)
    auto.meta_gradient(algorithm.meta_objective, params, batch, lambda loss: loss.backward())
    assert auto.chosen.name == "loop" and set(auto.timings) == {"loop"}


class Refusing(LoopStrategy):
    name = "refusing"

    def meta_gradient(self, *args):
        raise RuntimeError("vmap: called random operation while in randomness error mode")


def test_auto_passes_over_a_candidate_that_cannot_run_the_model():
    model, _, kind, batch, lr = mlp_case()
    auto = AutoStrategy([LoopStrategy(), Refusing()], min_repeats=1, max_repeats=1)
    metalab_meta_gradient(model, kind, batch, auto, 1, lr, False)
    assert auto.chosen.name == "loop" and set(auto.timings) == {"loop"}


def test_hybrid_query_threads_keep_the_model_and_the_gradient(monkeypatch):
    """Worker threads score with their own model copies: functional_call swaps a module's
    parameters in place, and two threads on one module left it holding their tensors."""
    from metalab.execution import threads as task_threads

    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: 3)
    model, forward, kind, batch, lr = conv_case(channels=20)
    before = list(model.parameters())
    ours = metalab_meta_gradient(model, kind, batch, HybridStrategy(1e9), 2, lr, False)
    assert all(a is b for a, b in zip(before, model.parameters(), strict=True))
    plain = [p.detach().contiguous().requires_grad_() for p in model.parameters()]
    reference = maml_meta_gradient(forward, plain, batch, kind.loss, 2, lr, False)
    assert relative_error(ours, reference) < 1e-8


@pytest.mark.parametrize("first_order", [False, True], ids=["maml", "fomaml"])
@pytest.mark.parametrize("workers", [1, 2, 3])
def test_hybrid_with_any_number_of_worker_threads_matches_reference(
    monkeypatch, workers, first_order
):
    """One worker back-propagates each chunk straight into the parameters (the path of a GPU
    and of autocast); several return their chunks' gradients and finish with one backward."""
    from metalab.execution import threads as task_threads

    monkeypatch.setattr(task_threads, "workers_for", lambda tasks, device: workers)
    fused = []
    real_fused = fused_first_block.folded_conv_pool
    monkeypatch.setattr(
        fused_first_block, "folded_conv_pool", lambda *args: fused.append(1) or real_fused(*args)
    )
    model, forward, kind, batch, lr = conv_case(channels=32)
    calls = []

    def backward(loss):
        calls.append(loss)
        loss.backward()

    algorithm_cls = FOMAML if first_order else MAML
    algorithm = algorithm_cls(InnerLoop(model, kind), 2, lr, 2, lr, first_order=first_order)
    params = dict(model.named_parameters())
    HybridStrategy(memory_budget_mib=1e-6).meta_gradient(
        algorithm.meta_objective, params, batch, backward
    )
    assert len(calls) == (len(batch) if workers == 1 else 1)  # chunks of one task here
    if fused_first_block.library() is not None:
        assert len(fused) == len(batch)  # each query pass, never the vectorised inner loop
    ours = [p.grad.clone() for p in model.parameters()]
    plain = [p.detach().contiguous().requires_grad_() for p in model.parameters()]
    reference = maml_meta_gradient(forward, plain, batch, kind.loss, 2, lr, first_order)
    assert relative_error(ours, reference) < 1e-8


def test_worker_threads_see_the_callers_context():
    from metalab.execution import threads as task_threads
    from metalab.models.vectorised import is_vectorised, vectorised

    with vectorised(), torch.no_grad():
        seen = task_threads.map_tasks(
            lambda task, state: (is_vectorised(), torch.is_grad_enabled(), state), 4, ["a", "b"]
        )
    assert [s[:2] for s in seen] == [(True, False)] * 4
    assert {s[2] for s in seen} <= {"a", "b"}


def test_query_threads_only_on_a_cpu_without_autocast():
    from metalab.execution.threads import workers_for

    cpu = torch.device("cpu")
    assert workers_for(5, cpu) == min(torch.get_num_threads(), 5)
    assert workers_for(5, torch.device("meta")) == 1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert workers_for(5, cpu) == 1
