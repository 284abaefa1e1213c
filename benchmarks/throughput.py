"""Meta-training throughput and peak memory of metalab's execution strategies.

Why: whether to run the tasks of a meta-batch one after another or vectorised with
``torch.func.vmap`` is a question of measurement, not of taste (on a CPU a vmap over many
tasks is slower and much larger than a loop; on a GPU often the reverse). This script
measures every metalab strategy on the same workload, in the same run, against a plain
textbook per-task loop written here independently of metalab (``torch.autograd.grad`` on an
``nn.Sequential``), so that a regression in metalab shows up as a ratio below the baseline
rather than as a number that merely drifted with the machine. metalab's rows run the very
code that trains: the algorithm's ``outer_step`` (its contract, ``metalab.algorithms.base``)
with the strategy, as ``MetaLearner.training_step`` calls it. Algorithms with no textbook
baseline here (ANIL, Meta-SGD) are compared with metalab's own loop of the same run (the
``x loop`` column), which is also where hybrid's gain shows.

Every row is a full outer step: meta-gradient over the meta-batch, then an Adam step.
Throughput is tasks per second from the median step time after warm-up. Each row runs in a
fresh subprocess (this script with the hidden ``--_one`` flag), so that its peak RSS (or,
on CUDA, ``torch.cuda.max_memory_allocated``) belongs to that implementation alone.

Run: ``python benchmarks/throughput.py`` (see benchmarks/README.md for flags and columns).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.func import functional_call

from metalab.algorithms import build_algorithm
from metalab.algorithms.base import Algorithm
from metalab.data.sinusoid import SinusoidTasks
from metalab.data.tasks import TaskBatch
from metalab.execution import LoopStrategy, Strategy, VmapStrategy, build_strategy
from metalab.inner_loop import InnerLoop
from metalab.losses import CLASSIFICATION, REGRESSION, TaskKind
from metalab.models.conv4 import Conv4
from metalab.models.layout import apply_memory_format, resolve_memory_format
from metalab.models.mlp import MLP
from metalab.models.norm import decomposed_batch_norm

RESULT_MARK = "@@throughput-row "
OUTER_LR = 1e-3
IMAGE_SIZE, CHANNELS = 28, 64


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    ways: int  # classes per task; 0 for regression
    shots: int  # support examples per class (per task for regression)
    queries: int  # query examples per class (per task for regression)
    inner_steps: int
    inner_lr: float
    meta_batch: int

    @property
    def is_image(self) -> bool:
        return self.ways > 0


WORKLOADS = {
    "5w1s": Workload(
        "5w1s",
        "Omniglot-shaped 5-way 1-shot, 15 queries/class, Conv-4, 1 inner step, lr 0.4",
        ways=5,
        shots=1,
        queries=15,
        inner_steps=1,
        inner_lr=0.4,
        meta_batch=32,
    ),
    "20w1s": Workload(
        "20w1s",
        "Omniglot-shaped 20-way 1-shot, 15 queries/class, Conv-4, 5 inner steps, lr 0.1",
        ways=20,
        shots=1,
        queries=15,
        inner_steps=5,
        inner_lr=0.1,
        meta_batch=16,
    ),
    "mamlpp5w1s": Workload(
        "mamlpp5w1s",
        "the MAML++ Omniglot preset's episodes: 5-way 1-shot, 1 query/class, Conv-4, "
        "5 inner steps, lr 0.1",
        ways=5,
        shots=1,
        queries=1,
        inner_steps=5,
        inner_lr=0.1,
        meta_batch=8,
    ),
    "sinusoid": Workload(
        "sinusoid",
        "sinusoid regression, MLP 40-40, 10 shots, 10 queries, 1 inner step, lr 0.01",
        ways=0,
        shots=10,
        queries=10,
        inner_steps=1,
        inner_lr=0.01,
        meta_batch=25,
    ),
}

IMPLEMENTATIONS = {  # --strategies key -> label
    "textbook": "textbook loop (autograd.grad)",
    "loop-nchw": "metalab loop, NCHW",
    "loop": "metalab loop",
    "vmap": "metalab vmap(chunk=all)",
    "vmap8": "metalab vmap(chunk=8)",
    "hybrid": "metalab hybrid",
    "auto": "metalab auto",
    "loop-mvbn": "metalab loop, mean/var batch norm",  # not a default row: see NOTES.md
}
DEFAULT_IMPLEMENTATIONS = ("textbook", "loop-nchw", "loop", "vmap", "hybrid", "auto")
# name -> first_order (Reptile is first order by nature)
ALGORITHMS = {"maml": False, "fomaml": True, "reptile": True, "anil": False, "metasgd": False}
# MAML++ (all its switches on, per-step batch norm) while its multi-step loss is on (the
# preset's first msl_anneal_steps outer steps), and after it (the final step's loss alone)
ALGORITHMS |= {"mamlpp-msl": False, "mamlpp": False}
# the algorithms the script has a textbook step for; the others compare with metalab's loop
TEXTBOOK_ALGORITHMS = {"maml", "fomaml", "reptile"}
# Reptile's outer step runs tasks through Strategy.map, which hybrid leaves to the loop
NOT_FOR_REPTILE = {"hybrid", "loop-mvbn"}
# hybrid needs an adapt-then-score objective, which the multi-step loss is not
NOT_FOR = {"reptile": NOT_FOR_REPTILE, "mamlpp-msl": {"hybrid"}}
BASELINE = "textbook"
LOOP = "loop"  # the second reference: metalab's own loop, for every algorithm

Step = Callable[[], None]


# --------------------------------------------------------------------------- workloads


def make_batch(workload: Workload, seed: int = 0) -> TaskBatch:
    """One meta-batch of random tasks with the workload's shapes (no data set needed)."""
    generator = torch.Generator().manual_seed(seed)
    if not workload.is_image:
        tasks = SinusoidTasks(workload.shots, workload.queries)
        return TaskBatch.stack([tasks.sample(generator) for _ in range(workload.meta_batch)])
    t, n = workload.meta_batch, workload.ways

    def images(per_class: int) -> torch.Tensor:
        return torch.rand(t, n * per_class, 1, IMAGE_SIZE, IMAGE_SIZE, generator=generator)

    def labels(per_class: int) -> torch.Tensor:
        return torch.arange(n).repeat_interleave(per_class).expand(t, -1).clone()

    return TaskBatch(
        images(workload.shots),
        labels(workload.shots),
        images(workload.queries),
        labels(workload.queries),
    )


def task_kind(workload: Workload) -> TaskKind:
    return CLASSIFICATION if workload.is_image else REGRESSION


def metalab_model(workload: Workload) -> nn.Module:
    if workload.is_image:
        return Conv4(1, workload.ways, IMAGE_SIZE, channels=CHANNELS, blocks=4, norm="batch")
    return MLP(1, 1, (40, 40))


def textbook_model(workload: Workload) -> nn.Sequential:
    """The standard ``nn.Sequential`` Conv-4 (or MLP 40-40), independent of metalab."""
    if not workload.is_image:
        return nn.Sequential(
            nn.Linear(1, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 1)
        )
    layers: list[nn.Module] = []
    width = 1
    for _ in range(4):
        layers += [
            nn.Conv2d(width, CHANNELS, 3, padding=1),
            nn.BatchNorm2d(CHANNELS, track_running_stats=False),
            nn.ReLU(),
            nn.MaxPool2d(2),
        ]
        width = CHANNELS
    side = IMAGE_SIZE // 16
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(CHANNELS * side * side, workload.ways))


# --------------------------------------------------------------------------- one outer step


def textbook_step(
    model: nn.Module, batch: TaskBatch, workload: Workload, first_order: bool
) -> Step:
    """The textbook MAML outer step: per task, autograd.grad inner steps, backward, Adam."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=OUTER_LR)
    loss_fn = task_kind(workload).loss
    tasks = len(batch)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        for sx, sy, qx, qy in zip(
            batch.support_x, batch.support_y, batch.query_x, batch.query_y, strict=True
        ):
            fast = params
            for _ in range(workload.inner_steps):
                support_loss = loss_fn(functional_call(model, fast, (sx,)), sy)
                grads = torch.autograd.grad(
                    support_loss, list(fast.values()), create_graph=not first_order
                )
                fast = {
                    k: p - workload.inner_lr * g
                    for (k, p), g in zip(fast.items(), grads, strict=True)
                }
            query_loss = loss_fn(functional_call(model, fast, (qx,)), qy)
            (query_loss / tasks).backward()
        optimizer.step()

    return step


def inner_settings(workload: Workload) -> dict[str, float | int]:
    """The workload's inner loop, the same in training and evaluation, for metalab's rows."""
    steps, lr = workload.inner_steps, workload.inner_lr
    return {"inner_steps": steps, "inner_lr": lr, "eval_inner_steps": steps, "eval_inner_lr": lr}


def textbook_reptile_step(model: nn.Module, batch: TaskBatch, workload: Workload) -> Step:
    """Reptile by the paper: per task, the workload's SGD steps on all of its examples from
    theta, then the outer gradient theta - mean(adapted) (outer step size 1), then Adam."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam(params.values(), lr=OUTER_LR)
    kind = task_kind(workload)
    examples_x = torch.cat([batch.support_x, batch.query_x], 1)
    examples_y = torch.cat([batch.support_y, batch.query_y], 1)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        total = {k: torch.zeros_like(p) for k, p in params.items()}
        for x, y in zip(examples_x, examples_y, strict=True):
            fast = {k: p.detach().requires_grad_() for k, p in params.items()}
            for _ in range(workload.inner_steps):
                loss = kind.loss(functional_call(model, fast, (x,)), y)
                grads = torch.autograd.grad(loss, list(fast.values()))
                fast = {
                    k: (p - workload.inner_lr * g).detach().requires_grad_()
                    for (k, p), g in zip(fast.items(), grads, strict=True)
                }
            with torch.no_grad():  # the fit after adaptation, which metalab logs too
                prediction = functional_call(model, fast, (x,))
                kind.loss(prediction, y), kind.metric(prediction, y)
                for k, p in fast.items():
                    total[k] += p
        for k, p in params.items():
            p.grad = p.detach() - total[k] / len(examples_x)
        optimizer.step()

    return step


def metalab_strategy(implementation: str, device: torch.device) -> Strategy:
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    if implementation in ("loop", "loop-nchw", "loop-mvbn"):
        return LoopStrategy()
    if implementation == "vmap":
        return VmapStrategy(None)
    if implementation == "vmap8":
        return VmapStrategy(8)
    if implementation in ("hybrid", "auto"):
        # what `strategy: hybrid|auto, vmap_chunk: null, vmap_memory_mib: null` builds
        return build_strategy(implementation, None, None, accelerator)
    raise ValueError(f"not a metalab implementation: {implementation!r}")


def metalab_algorithm(name: str, model: nn.Module, workload: Workload) -> Algorithm:
    """The algorithm as training builds it (``build_algorithm``), with the workload's inner
    loop; Reptile with the textbook's settings (SGD steps on all of a task's examples, outer
    step size 1, no annealing)."""
    settings = {"name": name, **inner_settings(workload), "first_order": ALGORITHMS[name]}
    if name == "reptile":
        settings.update(inner_optimizer="sgd", inner_batch=None, outer_step_size=1.0)
        settings.update(anneal="none")
    if name.startswith("mamlpp"):  # its multi-step loss on for 10**9 outer steps, or none
        settings.update(name="mamlpp", msl_anneal_steps=10**9 if name == "mamlpp-msl" else 0)
    return build_algorithm(OmegaConf.create(settings), InnerLoop(model, task_kind(workload)))


def contract_step(
    algorithm: Algorithm,
    model: nn.Module,
    batch: TaskBatch,
    strategy: Strategy,
    decomposed: bool = False,
) -> Step:
    """metalab's outer step as ``MetaLearner.training_step`` runs it (minus Lightning): the
    algorithm's ``outer_step``, then Adam on the model's and the algorithm's parameters."""
    params = dict(model.named_parameters())
    optimizer = torch.optim.Adam([*params.values(), *algorithm.parameters()], lr=OUTER_LR)

    def backward(loss: torch.Tensor) -> None:
        loss.backward()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with decomposed_batch_norm() if decomposed else nullcontext():
            algorithm.outer_step(params, batch, strategy, backward)
        optimizer.step()

    return step


def metalab_step(
    model: nn.Module,
    batch: TaskBatch,
    workload: Workload,
    first_order: bool,
    strategy: Strategy,
    decomposed: bool = False,
) -> Step:
    """MAML's (or FOMAML's) ``contract_step``, the counterpart of ``textbook_step``."""
    algorithm = metalab_algorithm("fomaml" if first_order else "maml", model, workload)
    return contract_step(algorithm, model, batch, strategy, decomposed)


def metalab_reptile_step(
    model: nn.Module, batch: TaskBatch, workload: Workload, strategy: Strategy
) -> Step:
    """Reptile's ``contract_step``, the counterpart of ``textbook_reptile_step``."""
    return contract_step(metalab_algorithm("reptile", model, workload), model, batch, strategy)


# --------------------------------------------------------------------------- measurement


def rss_mib() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def memory_now_mib(device: torch.device) -> float:
    """RSS (CPU) or allocated CUDA memory now; on CUDA, also restarts the peak count."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return torch.cuda.memory_allocated(device) / 2**20
    return rss_mib()


def peak_memory_mib(device: torch.device) -> float:
    """Peak RSS of this process (ru_maxrss is in KiB on Linux), or peak CUDA allocation."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot, steal time included (``/proc/stat``)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class ContentionMeter:
    """How many cores other processes (or the hypervisor) used while we timed.

    Shared machines run other jobs beside the benchmark; a row measured while they ran is
    slower for reasons that are not its own, and this makes that visible.
    """

    def __init__(self) -> None:
        self.wall, self.busy, self.own = time.perf_counter(), machine_busy_s(), own_cpu_s()

    def other_cores(self) -> float:
        wall = time.perf_counter() - self.wall
        others = (machine_busy_s() - self.busy) - (own_cpu_s() - self.own)
        return max(0.0, others / wall) if wall > 0 else 0.0


def enough(seconds: list[float], steps: int, budget_s: float, min_time_s: float) -> bool:
    """Whether to stop timing: ``steps`` done (fast rows go on to ``min_time_s`` seconds,
    at most 20x ``steps``), or a slow row's timed steps have used ``budget_s``."""
    done, spent = len(seconds), sum(seconds)
    if done and spent > budget_s:
        return True
    return done >= steps and (spent >= min_time_s or done >= 20 * steps)


def time_steps(
    step: Step, device: torch.device, warmup: int, steps: int, budget_s: float, min_time_s: float
) -> tuple[list[float], float]:
    """Seconds per outer step after ``warmup`` untimed steps, and the cores other processes
    used meanwhile."""
    for _ in range(warmup):
        step()
    synchronize(device)
    meter = ContentionMeter()
    seconds: list[float] = []
    while not enough(seconds, steps, budget_s, min_time_s):
        start = time.perf_counter()
        step()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds, meter.other_cores()


@dataclass
class Row:
    workload: str
    algorithm: str
    implementation: str
    label: str
    tasks_per_s: float
    step_seconds: list[float]
    steps_requested: int
    memory_kind: str  # "rss" (peak RSS of the process) or "cuda" (max_memory_allocated)
    peak_mib: float
    base_mib: float  # after the model and the batch were built
    increase_mib: float
    threads: int
    device: str
    other_cores: float  # CPU used by other processes during the timed steps, in cores
    auto_timings: dict[str, float] | None = None
    attempts: int = 1  # measured again when other jobs used the cores (--retries)
    tasks_per_s_ratio: float | None = None
    peak_ratio: float | None = None
    error: str | None = None
    tasks_per_s_vs_loop: float | None = None  # against metalab's loop of the same run
    peak_vs_loop: float | None = None


def build_step(
    implementation: str, algorithm: str, workload: Workload, device: torch.device
) -> tuple[Step, Strategy | None]:
    torch.manual_seed(0)
    batch = make_batch(workload).to(device)
    if implementation == BASELINE:
        model = textbook_model(workload).to(device)
        if algorithm == "reptile":
            return textbook_reptile_step(model, batch, workload), None
        return textbook_step(model, batch, workload, ALGORITHMS[algorithm]), None
    model = metalab_model(workload).to(device)
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    layout = "contiguous" if implementation == "loop-nchw" else "auto"
    apply_memory_format(model, resolve_memory_format(layout, accelerator))  # as training does
    strategy = metalab_strategy(implementation, device)
    decomposed = implementation == "loop-mvbn"
    step = contract_step(
        metalab_algorithm(algorithm, model, workload), model, batch, strategy, decomposed
    )
    return step, strategy


def make_row(
    spec: str,
    strategy: Strategy | None,
    seconds: list[float],
    other_cores: float,
    args: argparse.Namespace,
    memory: tuple[str, float, float] | None,
) -> Row:
    """A measured row; ``memory`` is (kind, peak, base), None where the process is shared."""
    implementation, algorithm, workload_name = spec.split(",")
    workload = WORKLOADS[workload_name]
    label = IMPLEMENTATIONS[implementation]
    # auto's trial: of the meta-gradient (MAML, FOMAML), else of the per-task map (Reptile)
    timings = getattr(strategy, "timings", None) or getattr(strategy, "map_timings", None)
    if implementation == "auto":
        label = f"metalab {strategy.name}"
    nan = float("nan")
    kind, peak, base = memory or ("shared", nan, nan)
    return Row(
        workload=workload.name,
        algorithm=algorithm,
        implementation=implementation,
        label=label,
        tasks_per_s=workload.meta_batch / statistics.median(seconds),
        step_seconds=seconds,
        steps_requested=args.steps,
        memory_kind=kind,
        peak_mib=peak,
        base_mib=base,
        increase_mib=peak - base,
        threads=args.threads,
        device=args.device,
        other_cores=other_cores,
        auto_timings=dict(timings) if timings else None,
    )


def measure_one(spec: str, args: argparse.Namespace) -> Row:
    """Child process: build one implementation, time it, report its memory."""
    implementation, algorithm, workload_name = spec.split(",")
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    step, strategy = build_step(implementation, algorithm, WORKLOADS[workload_name], device)
    base = memory_now_mib(device)
    seconds, other_cores = time_steps(
        step, device, args.warmup, args.steps, args.row_budget, args.min_time
    )
    memory = ("cuda" if device.type == "cuda" else "rss", peak_memory_mib(device), base)
    return make_row(spec, strategy, seconds, other_cores, args, memory)


def measure_together(specs: list[str], args: argparse.Namespace) -> list[Row]:
    """Child process of ``--interleave``: the rows of one workload and algorithm built side
    by side and timed in turns, one outer step of each per round, so that a load that drifts
    (other jobs on a shared machine) weighs on all of them alike and their ratios hold. The
    process's memory is theirs together, so no row reports any."""
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    built = []
    for spec in specs:
        implementation, algorithm, workload_name = spec.split(",")
        step, strategy = build_step(implementation, algorithm, WORKLOADS[workload_name], device)
        built.append((spec, step, strategy))
    for _ in range(args.warmup):
        for _, step, _ in built:
            step()
    synchronize(device)
    meter = ContentionMeter()
    seconds: dict[str, list[float]] = {spec: [] for spec in specs}
    budget = args.row_budget * len(specs)  # the rows' budgets, spent in turns
    while not all(enough(seconds[s], args.steps, budget, args.min_time) for s in specs):
        for spec, step, _ in built:
            start = time.perf_counter()
            step()
            synchronize(device)
            seconds[spec].append(time.perf_counter() - start)
    other_cores = meter.other_cores()
    return [
        make_row(spec, strategy, seconds[spec], other_cores, args, None)
        for spec, _, strategy in built
    ]


def child_command(spec: str, args: argparse.Namespace) -> list[str]:
    """The child process measuring ``spec`` (``--interleave``: several, joined by ";")."""
    return [
        sys.executable,
        str(Path(__file__).resolve()),
        "--_one", spec,
        *(["--interleave"] if args.interleave else []),
        "--steps", str(args.steps),
        "--warmup", str(args.warmup),
        "--threads", str(args.threads),
        "--device", args.device,
        "--row-budget", str(args.row_budget),
        "--min-time", str(args.min_time),
        "--max-memory-gib", str(args.max_memory_gib),
    ]  # fmt: skip


def failed_row(spec: str, args: argparse.Namespace, error: str) -> Row:
    implementation, algorithm, workload = spec.split(",")
    nan = float("nan")
    return Row(
        workload, algorithm, implementation, IMPLEMENTATIONS[implementation], nan, [],
        args.steps, "", nan, nan, nan, args.threads, args.device, nan, error=error[:160],
    )  # fmt: skip


def describe_failure(error: BaseException, args: argparse.Namespace) -> str:
    if isinstance(error, MemoryError) or "can't allocate memory" in str(error):
        return f"out of memory (over --max-memory-gib {args.max_memory_gib:.1f})"
    if "out of memory" in str(error).lower():
        return "out of GPU memory"
    return f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def run_in_subprocess(spec: str, args: argparse.Namespace) -> Row:
    """Measure one implementation in a fresh interpreter so its peak memory is its own."""
    return run_group_in_subprocess([spec], args)[0]


def run_group_in_subprocess(specs: list[str], args: argparse.Namespace) -> list[Row]:
    """The rows of ``specs`` from one fresh interpreter (several only with --interleave)."""
    done = subprocess.run(child_command(";".join(specs), args), capture_output=True, text=True)
    rows = [
        Row(**json.loads(line[len(RESULT_MARK) :]))
        for line in done.stdout.splitlines()
        if line.startswith(RESULT_MARK)
    ]
    if rows:
        return rows
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [f"exit {done.returncode}"]
    return [failed_row(spec, args, tail[0]) for spec in specs]


def measure_row(spec: str, args: argparse.Namespace) -> Row:
    """One row; measured again (up to ``--retries`` times) while other jobs took more than
    ``--contention`` cores, keeping the least disturbed measurement."""
    best = run_in_subprocess(spec, args)
    for attempt in range(2, args.retries + 2):
        if best.error or not best.other_cores > args.contention:
            break
        row = run_in_subprocess(spec, args)
        row.attempts = attempt
        if row.error is None and row.other_cores < best.other_cores:
            best = row
        best.attempts = attempt
    return best


def run_child(spec: str, args: argparse.Namespace) -> None:
    """``--_one``: measure one row (with --interleave, each of several) under the memory
    limit and print each as a JSON line."""
    if args.device == "cpu" and args.max_memory_gib > 0:
        limit = int(args.max_memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))
    specs = spec.split(";")
    try:
        rows = measure_together(specs, args) if args.interleave else [measure_one(spec, args)]
    except (RuntimeError, MemoryError) as error:  # an allocation over the limit, mostly
        rows = [failed_row(s, args, describe_failure(error, args)) for s in specs]
    for row in rows:
        print(RESULT_MARK + json.dumps(asdict(row)), flush=True)


# --------------------------------------------------------------------------- report


def add_ratios(rows: list[Row]) -> None:
    """Ratios against the textbook loop and against metalab's loop of the same workload and
    algorithm, same run."""
    for reference in (BASELINE, LOOP):
        baselines = {(r.workload, r.algorithm): r for r in rows if r.implementation == reference}
        for row in rows:
            base = baselines.get((row.workload, row.algorithm))
            if base is None or base.error or row.error:
                continue
            speed, peak = row.tasks_per_s / base.tasks_per_s, row.peak_mib / base.peak_mib
            if reference == BASELINE:
                row.tasks_per_s_ratio, row.peak_ratio = speed, peak
            else:
                row.tasks_per_s_vs_loop, row.peak_vs_loop = speed, peak


def fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return "-" if value is None or value != value else f"{value:{spec}}{suffix}"


def steps_note(row: Row, warmup: int) -> str:
    timed = len(row.step_seconds)
    note = f"{warmup}+{timed}"
    if 0 < timed < row.steps_requested:
        note += " (cut)"
    if row.attempts > 1:
        note += f" try {row.attempts}"
    return note


COLUMNS = (
    ("workload", "left"),
    ("algorithm", "left"),
    ("implementation", "left"),
    ("tasks/s", "right"),
    ("x textbook", "right"),
    ("x loop", "right"),
    ("peak MiB", "right"),
    ("x textbook", "right"),
    ("x loop", "right"),
    ("+MiB over built", "right"),
    ("warmup+timed", "left"),
    ("other jobs", "right"),
)


def table_row(row: Row, warmup: int) -> list[str]:
    if row.error:
        return [row.workload, row.algorithm, row.label, "failed (below)"]
    return [
        row.workload,
        row.algorithm,
        row.label,
        fmt(row.tasks_per_s, ".1f"),
        fmt(row.tasks_per_s_ratio, ".2f", "x"),
        fmt(row.tasks_per_s_vs_loop, ".2f", "x"),
        fmt(row.peak_mib, ".0f"),
        fmt(row.peak_ratio, ".2f", "x"),
        fmt(row.peak_vs_loop, ".2f", "x"),
        fmt(row.increase_mib, ".0f"),
        steps_note(row, warmup),
        fmt(row.other_cores, ".2f", " cores"),
    ]


def render(rows: list[Row], args: argparse.Namespace, console: Console) -> None:
    memory = "torch.cuda.max_memory_allocated" if args.device == "cuda" else "peak RSS"
    table = Table(title="Meta-training throughput (full outer step incl. Adam)")
    for name, justify in COLUMNS:
        table.add_column(name, justify=justify, no_wrap=True)
    for row in rows:
        table.add_row(*table_row(row, args.warmup))
    console.print(table)
    console.print(
        f"peak MiB: {memory} of the row's own process; +MiB over built: peak minus the memory "
        "once the model and meta-batch were built. x textbook, x loop: ratio to the textbook "
        "loop (MAML, FOMAML, Reptile), to metalab's loop, of the same workload and algorithm "
        f"in this run. other jobs: CPU cores used by other "
        f"processes (and steal) during the row's timed steps, of {os.cpu_count()}; a row with "
        "other jobs running was slowed by them."
    )
    if any(r.memory_kind == "shared" for r in rows):
        console.print(
            "--interleave: the rows of a workload and algorithm ran in one process, in turns "
            "(their ratios hold on a loaded machine; their memory is not their own, so none is "
            "shown)."
        )
    if any(0 < len(r.step_seconds) < r.steps_requested for r in rows):
        console.print(
            f"(cut): a slow row stopped timing once its timed steps had taken "
            f"{args.row_budget:g} s (--row-budget)."
        )
    if any(r.attempts > 1 for r in rows):
        console.print(
            f"try N: other jobs used > {args.contention:g} cores during the row, so it was "
            "measured N times (--retries) and the least disturbed measurement is shown."
        )
    for row in rows:
        if row.error:
            console.print(f"failed ({row.workload}, {row.algorithm}, {row.label}): {row.error}")
        if row.auto_timings:
            rates = ", ".join(f"{k} {v:.1f}" for k, v in row.auto_timings.items())
            console.print(f"auto's own trial ({row.workload}, {row.algorithm}), tasks/s: {rates}")


def machine_summary(args: argparse.Namespace) -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, nproc {os.cpu_count()}, torch {torch.__version__}, threads {args.threads}, "
        f"device {args.device}, float32; tasks/s from the median of {args.steps} timed outer "
        f"steps after {args.warmup} warm-up (fewer for slow rows, more for fast ones)"
    )


# --------------------------------------------------------------------------- command line


def available_memory_gib() -> float:
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 0.0  # unknown: no limit


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="5w1s", choices=[*WORKLOADS, "all"])
    parser.add_argument("--steps", type=int, default=5, help="timed outer steps per row")
    parser.add_argument("--warmup", type=int, default=1, help="untimed outer steps per row")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--strategies",
        default=",".join(DEFAULT_IMPLEMENTATIONS),
        help=f"comma-separated subset of: {', '.join(IMPLEMENTATIONS)}",
    )
    parser.add_argument("--algorithms", default="maml,fomaml", help="comma-separated")
    parser.add_argument(
        "--row-budget",
        type=float,
        default=8.0,
        help="seconds of timed steps after which a slow row stops (after at least 1 step)",
    )
    parser.add_argument(
        "--min-time",
        type=float,
        default=1.0,
        help="fast rows time more than --steps steps, until this many seconds (max 20x)",
    )
    parser.add_argument(
        "--contention",
        type=float,
        default=0.15,
        help="a row during which other processes used more cores than this is measured again",
    )
    parser.add_argument("--retries", type=int, default=1, help="see --contention")
    parser.add_argument(
        "--max-memory-gib",
        type=float,
        default=round(0.8 * available_memory_gib(), 1),
        help="CPU: a row that allocates more fails as out of memory instead of starting the "
        "OOM killer (RLIMIT_DATA; 0: no limit; default 80%% of MemAvailable)",
    )
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="time the implementations of each workload and algorithm in one process, one "
        "outer step of each in turn: ratios that hold on a machine other jobs load unevenly "
        "(no memory columns, the process is shared)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--_one", dest="one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for option, known in [("strategies", IMPLEMENTATIONS), ("algorithms", ALGORITHMS)]:
        unknown = set(getattr(args, option).split(",")) - set(known)
        if unknown:
            parser.error(f"--{option}: unknown {sorted(unknown)}; choose from {list(known)}")
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def measure_all(args: argparse.Namespace, console: Console) -> list[Row]:
    """Every (workload, algorithm, implementation), each in its own subprocess (with
    --interleave, those of a workload and algorithm in one)."""
    workloads = list(WORKLOADS) if args.workload == "all" else [args.workload]
    rows: list[Row] = []
    for name in workloads:
        workload = WORKLOADS[name]
        console.print(f"[bold]{name}[/]: {workload.description}, meta-batch {workload.meta_batch}")
        for algorithm in args.algorithms.split(","):
            specs = [
                f"{implementation},{algorithm},{name}"
                for implementation in args.strategies.split(",")
                if implementation not in NOT_FOR.get(algorithm, set())
                and not (implementation == BASELINE and algorithm not in TEXTBOOK_ALGORITHMS)
            ]
            if args.interleave:
                with console.status(f"measuring {', '.join(specs)} in turns"):
                    group = run_group_in_subprocess(specs, args)
            else:
                group = []
                for spec in specs:
                    with console.status(f"measuring {spec}"):
                        group.append(measure_row(spec, args))
            for spec, row in zip(specs, group, strict=True):
                console.print(
                    f"  {spec}: {fmt(row.tasks_per_s, '.1f')} tasks/s, "
                    f"peak {fmt(row.peak_mib, '.0f')} MiB {row.error or ''}"
                )
            rows += group
    return rows


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.one:
        run_child(args.one, args)
        return
    console = Console(width=max(Console().width, 170))
    console.print(machine_summary(args))
    start = time.perf_counter()
    rows = measure_all(args, console)
    add_ratios(rows)
    render(rows, args, console)
    console.print(f"total {time.perf_counter() - start:.0f} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2) + "\n")


if __name__ == "__main__":
    main()
