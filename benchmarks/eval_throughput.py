"""Evaluation tasks/s per algorithm: the previous per-task path against ``fast_eval``.

Each row builds a preset's model (random weights, random 28x28 images with the preset's test
episode shapes: no data set needed) and times its test protocol (``eval.curve_points``
scored steps) both ways in one process, interleaved round by round; the ratio is the median
of the per-round ratios, so a shared machine's drift weighs on both alike. A 1024x1024 ``mm``
is timed in the same rounds to show the machine's state (GFLOP/s). One intra-op thread,
and a third column: the new path as ``metalab-eval`` runs it with ``--workers`` intra-op
threads (test tasks side by side on worker threads, ``LoopStrategy.map``); measure it on an
otherwise quiet machine, with as many workers as idle cores.

    python benchmarks/eval_throughput.py                 # the default rows, ~5 min
    python benchmarks/eval_throughput.py --rows reptile_20w1s_nt --tasks 1 --rounds 2
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from metalab.data.tasks import TaskBatch
from metalab.module import MetaLearner
from metalab.paths import config_dir

# row name -> (experiment preset, extra overrides)
ROWS = {
    "reptile_5w1s": ("reptile_omniglot_5w1s", ()),
    "reptile_20w1s": ("reptile_omniglot_20w1s", ()),
    "reptile_20w1s_nt": ("reptile_omniglot_20w1s", ("algorithm.transductive=false",)),
    "maml_5w1s": ("maml_omniglot_5w1s", ()),
    "metalstm_5w1s": ("metalstm_omniglot_5w1s", ()),
    "protonet_5w1s": ("protonet_omniglot_5w1s", ()),
}
DEFAULT_ROWS = "reptile_5w1s,reptile_20w1s,maml_5w1s,metalstm_5w1s,protonet_5w1s"


def build(preset: str, overrides: tuple[str, ...]) -> tuple[MetaLearner, object]:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={preset}", "strategy=loop", *overrides])
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    torch.manual_seed(0)
    return MetaLearner(plain, (1, 28, 28), int(cfg.dataset.ways)), cfg


def random_tasks(cfg, tasks: int) -> TaskBatch:
    """Random images with the preset's test episode shapes."""
    d = cfg.dataset
    ways = d.get("test_ways") or d.ways
    shots = d.get("test_shots") or d.shots
    queries = d.get("test_queries") or d.queries
    generator = torch.Generator().manual_seed(0)
    labels = torch.arange(ways)
    return TaskBatch(
        torch.rand(tasks, ways * shots, 1, 28, 28, generator=generator),
        labels.repeat_interleave(shots).expand(tasks, -1).contiguous(),
        torch.rand(tasks, ways * queries, 1, 28, 28, generator=generator),
        labels.repeat_interleave(queries).expand(tasks, -1).contiguous(),
    )


def evaluator(module: MetaLearner, batch: TaskBatch, method: str) -> Callable[[], dict]:
    """One pass over the batch with ``method`` (``evaluate`` or ``evaluate_per_task``)."""
    algorithm, steps = module.algorithm, module._curve_steps()
    run = getattr(algorithm, method, algorithm.evaluate)  # metric methods: one path
    params = {k: p.detach() for k, p in module.model.named_parameters()}
    tasks = list(zip(batch.support_x, batch.support_y, batch.query_x, batch.query_y, strict=True))

    def call() -> dict:
        with torch.enable_grad():  # as MetaLearner._evaluate runs it
            return [run(params, *task, score_at=steps) for task in tasks]

    return call


def on_workers(module: MetaLearner, batch: TaskBatch, workers: int) -> Callable[[], object]:
    """One pass over the batch as the module's test step runs it, on ``workers`` threads."""
    steps = module._curve_steps()

    def call() -> object:
        torch.set_num_threads(workers)
        try:
            return module._evaluate(batch, steps)
        finally:
            torch.set_num_threads(1)

    return call


def seconds(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def gflops() -> float:
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    return 2 * 1024**3 / min(seconds(lambda: a @ b) for _ in range(3)) / 1e9


def measure(name: str, tasks: int, rounds: int, workers: int) -> dict:
    preset, overrides = ROWS[name]
    module, cfg = build(preset, overrides)
    batch = random_tasks(cfg, tasks)
    old, new = evaluator(module, batch, "evaluate_per_task"), evaluator(module, batch, "evaluate")
    parallel = on_workers(module, batch, workers)
    old(), new(), parallel()  # warm-up (the native kernel's first compile, allocator)
    times: dict[str, list[float]] = {"old": [], "new": [], "parallel": [], "gflops": []}
    for _ in range(rounds):
        times["old"].append(seconds(old))
        times["new"].append(seconds(new))
        times["parallel"].append(seconds(parallel))
        times["gflops"].append(gflops())
    ratio = statistics.median(o / n for o, n in zip(times["old"], times["new"], strict=True))
    test_tasks = int(cfg.eval.tasks)
    rate_old, rate_new = tasks / min(times["old"]), tasks / min(times["new"])
    rate_parallel = tasks / min(times["parallel"])
    return {
        "row": name,
        "steps": len(module._curve_steps()),
        "old": rate_old,
        "new": rate_new,
        "ratio": ratio,
        "test_tasks": test_tasks,
        "minutes_old": test_tasks / rate_old / 60,
        "minutes_new": test_tasks / rate_new / 60,
        "parallel": rate_parallel,
        "parallel_ratio": statistics.median(
            o / p for o, p in zip(times["old"], times["parallel"], strict=True)
        ),
        "minutes_parallel": test_tasks / rate_parallel / 60,
        "gflops": statistics.median(times["gflops"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=DEFAULT_ROWS, help=f"any of {', '.join(ROWS)}")
    parser.add_argument("--tasks", type=int, default=3, help="tasks per timed pass")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per row")
    parser.add_argument(
        "--workers", type=int, default=2, help="threads of the third column (idle cores)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    w = args.workers
    print(
        "| row | scored steps | per-task tasks/s | new tasks/s | x per-task (median of rounds) "
        f"| new on {w} workers tasks/s | x per-task | test tasks "
        f"| projected minutes, per-task -> new -> {w} workers | mm GFLOP/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in args.rows.split(","):
        r = measure(name, args.tasks, args.rounds, w)
        print(
            f"| {r['row']} | {r['steps']} | {r['old']:.2f} | {r['new']:.2f} | {r['ratio']:.2f} "
            f"| {r['parallel']:.2f} | {r['parallel_ratio']:.2f} | {r['test_tasks']} "
            f"| {r['minutes_old']:.1f} -> {r['minutes_new']:.1f} -> {r['minutes_parallel']:.1f} "
            f"| {r['gflops']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
