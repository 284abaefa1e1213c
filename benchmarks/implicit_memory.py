"""Peak memory and tasks/s of iMAML against second-order MAML as the inner steps grow.

Why: second-order MAML keeps every inner step's graph until the query loss is back-propagated,
so its memory grows with the inner steps; iMAML keeps no graph through the inner loop (one
support gradient's graph, inside its conjugate-gradient solve), so its memory should stay
flat. This script measures both on the same workload in one run: Omniglot-shaped 20-way
1-shot tasks (random 28x28x1 tensors, no data set needed), Conv-4 with 64 filters and batch
norm, the algorithms' own ``outer_step`` with ``strategy=loop`` (one task's graph at a time,
what ``MetaLearner.training_step`` runs) and an Adam step, at 1, 5, 10 and 20 inner steps.

Each row (algorithm, inner steps) runs in a fresh subprocess (this script with ``--_one``), so
its peak memory is its own: CPU, the growth of the peak RSS (``ru_maxrss``) over the RSS once
the model, optimiser and meta-batch were built; CUDA, ``max_memory_allocated`` over what was
allocated then. tasks/s = meta-batch / median seconds of the timed outer steps. The table
prints the ratios that hold on a loaded machine: iMAML / MAML at each step count, and each
algorithm's memory against its own 1-step row.

Run: ``python benchmarks/implicit_memory.py`` (``--help`` for the flags).
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from metalab.algorithms.base import Algorithm
from metalab.algorithms.imaml import IMAML
from metalab.algorithms.maml import MAML
from metalab.data.tasks import TaskBatch
from metalab.execution import LoopStrategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION
from metalab.models.conv4 import Conv4
from metalab.models.layout import apply_memory_format, resolve_memory_format

MARK = "@@implicit-memory-row "
ALGORITHMS = ("maml", "imaml")


def make_batch(args: argparse.Namespace, device: torch.device) -> TaskBatch:
    generator = torch.Generator().manual_seed(0)

    def part(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.rand(args.meta_batch, args.ways * per_class, 1, 28, 28, generator=generator)
        y = torch.arange(args.ways).repeat_interleave(per_class)
        return x, y.expand(args.meta_batch, -1).clone()

    return TaskBatch(*part(args.shots), *part(args.queries)).to(device)


def make_algorithm(name: str, steps: int, model: torch.nn.Module, args) -> Algorithm:
    loop = InnerLoop(model, CLASSIFICATION)
    if name == "maml":  # second order
        return MAML(loop, steps, args.inner_lr, 1, args.inner_lr)
    return IMAML(loop, steps, args.inner_lr, 1, args.inner_lr, lam=args.lam, cg_steps=args.cg_steps)


def rss_mib() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


def measure(name: str, steps: int, args: argparse.Namespace) -> dict:
    """One row, in this process: build, warm up, time; memory over what was built."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = Conv4(1, args.ways, image_size=28, channels=64).to(device)
    apply_memory_format(
        model, resolve_memory_format("auto", "gpu" if device.type == "cuda" else "cpu")
    )
    algorithm = make_algorithm(name, steps, model, args).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *algorithm.parameters()], lr=1e-3)
    batch, strategy = make_batch(args, device), LoopStrategy()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        built = torch.cuda.memory_allocated(device) / 2**20
    else:
        built = rss_mib()

    def outer_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        params = dict(model.named_parameters())
        algorithm.outer_step(params, batch, strategy, lambda loss: loss.backward())
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(args.warmup):
        outer_step()
    seconds = []
    for _ in range(args.steps):
        start = time.perf_counter()
        outer_step()
        seconds.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "algorithm": name,
        "inner_steps": steps,
        "tasks_per_s": args.meta_batch / statistics.median(seconds),
        "peak_mib": peak,
        "built_mib": built,
        "added_mib": peak - built,
        "seconds": seconds,
    }


def run_row(name: str, steps: int, args: argparse.Namespace) -> dict:
    flags = [
        f"--{key.replace('_', '-')}={value}"
        for key, value in vars(args).items()
        if key not in ("one", "json", "inner_steps")
    ]
    out = subprocess.run(
        [sys.executable, __file__, f"--_one={name},{steps}", *flags],
        capture_output=True,
        text=True,
    )
    for line in out.stdout.splitlines():
        if line.startswith(MARK):
            return json.loads(line[len(MARK) :])
    last = (out.stderr.strip().splitlines() or ["no output"])[-1]
    return {"algorithm": name, "inner_steps": steps, "error": last}


def table(rows: list[dict], args: argparse.Namespace) -> str:
    by = {(r["algorithm"], r["inner_steps"]): r for r in rows}
    unit = "+MiB over built (peak RSS)" if args.device == "cpu" else "+MiB over built (CUDA)"
    lines = [
        "| inner steps | MAML tasks/s | iMAML tasks/s | iMAML / MAML tasks/s "
        f"| MAML {unit} | iMAML {unit} | iMAML / MAML memory "
        "| MAML memory / its 1-step | iMAML memory / its 1-step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    first = min(args.inner_steps)
    for steps in args.inner_steps:
        maml, imaml = by[("maml", steps)], by[("imaml", steps)]
        if "error" in maml or "error" in imaml:
            lines.append(f"| {steps} | {maml.get('error', '')} | {imaml.get('error', '')} |")
            continue
        base_m, base_i = by[("maml", first)], by[("imaml", first)]
        lines.append(
            f"| {steps} | {maml['tasks_per_s']:.2f} | {imaml['tasks_per_s']:.2f} "
            f"| {imaml['tasks_per_s'] / maml['tasks_per_s']:.2f} "
            f"| {maml['added_mib']:.0f} | {imaml['added_mib']:.0f} "
            f"| {imaml['added_mib'] / maml['added_mib']:.2f} "
            f"| {maml['added_mib'] / base_m['added_mib']:.2f} "
            f"| {imaml['added_mib'] / base_i['added_mib']:.2f} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--inner-steps", type=int, nargs="+", default=[1, 5, 10, 20])
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--shots", type=int, default=1)
    parser.add_argument("--queries", type=int, default=15, help="query images per class")
    parser.add_argument("--meta-batch", type=int, default=4, help="tasks per outer step")
    parser.add_argument("--inner-lr", type=float, default=0.1)
    parser.add_argument("--lam", type=float, default=2.0, help="iMAML's proximal strength")
    parser.add_argument("--cg-steps", type=int, default=5, help="iMAML's CG iterations")
    parser.add_argument("--steps", type=int, default=3, help="timed outer steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed outer steps per row")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--_one", dest="one", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.one:
        name, steps = args.one.split(",")
        print(MARK + json.dumps(measure(name, int(steps), args)), flush=True)
        return 0
    rows = [run_row(name, steps, args) for steps in args.inner_steps for name in ALGORITHMS]
    print(
        f"{args.ways}-way {args.shots}-shot, {args.queries} queries/class, 28x28x1, Conv-4 "
        f"(64 filters, batch norm), meta-batch {args.meta_batch}, strategy=loop, inner lr "
        f"{args.inner_lr}; iMAML lam {args.lam}, {args.cg_steps} CG steps; {args.device}, "
        f"{args.threads} thread(s); median of {args.steps} outer steps after {args.warmup} "
        f"warm-up; torch {torch.__version__}"
    )
    print(table(rows, args))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
