"""Time to accuracy and what a run cost: the CPU (and wall) seconds of training until the
validation metric first reached a threshold, and each group's budget, steps and hardware.

Speed work should show up as an earlier curve, not only as a faster step; these columns make
it readable from a sweep. Times come from the ``time/cpu_seconds`` and ``time/wall_seconds``
that every validation logs (budget.TrainingClock), so a threshold is only seen at the
validations, and runs logged before metalab recorded time have no time columns at all:
they show empty cells, never 0 and never "not reached".
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from metalab.compare.groups import Group
from metalab.compare.load import Run
from metalab.compare.rows import Row
from metalab.compare.tables import (
    fmt_seconds,
    markdown_table,
    mean_of,
    relative,
    steps_text,
    write_records,
)

DEFAULT_ACC_THRESHOLDS = (0.90, 0.95, 0.97)
NOT_REACHED = "—"
LEGEND = (
    "Time to a threshold: training CPU seconds (all threads, resumed attempts included) "
    "until the validation metric first reached it, seen at the validations; wall time in "
    "brackets (on a GPU run the wall time is the GPU time). Groups: mean over the seeds "
    f"that reached it; {NOT_REACHED} = not reached within the run's training (k/n: seeds "
    "that reached it). Empty: the runs predate time logging. Budget columns: mean per run."
)


@dataclass(frozen=True)
class Threshold:
    """A target for the validation metric: accuracy at or above (a fraction), or MSE at or
    below."""

    metric: str  # "acc" or "mse"
    value: float

    @property
    def key(self) -> str:
        """Column-name suffix: acc90, acc97.5, mse0.5."""
        shown = 100 * self.value if self.metric == "acc" else self.value
        return f"{self.metric}{shown:g}"

    @property
    def label(self) -> str:
        if self.metric == "acc":
            return f"val acc ≥ {100 * self.value:g}%"
        return f"val {self.metric} ≤ {self.value:g}"

    def met_by(self, value: float) -> bool:
        return value >= self.value if self.metric == "acc" else value <= self.value


@dataclass(frozen=True)
class Reached:
    step: int
    cpu_seconds: float | None  # None only if that validation logged no time
    wall_seconds: float | None


def parse_thresholds(text: str | None, metric: str) -> list[Threshold]:
    """``"0.9,0.95,0.97"`` -> thresholds; accuracies may also be given in % (``90,95,97``)."""
    if not text or text.strip().lower() == "none":
        return []
    values = [float(part) for part in text.split(",") if part.strip()]
    if metric == "acc" and all(v > 1 for v in values):
        values = [v / 100 for v in values]
    return [Threshold(metric, v) for v in values]


def training(rows: list[Row]) -> list[Row]:
    """The rows of training runs: an evaluation of a checkpoint has no training time."""
    return [row for row in rows if row.group.evaluation is None]


def timed(run: Run) -> bool:
    """Whether the run logged its training time at its validations."""
    return bool(run.clock)


def on_gpu(run: Run) -> bool:
    """A GPU ran it: its wall time is the GPU's time, its CPU time mostly the host's."""
    accelerator = str(run.hardware.get("accelerator", "cpu")).lower()
    return bool(run.hardware.get("gpu")) or accelerator in ("gpu", "cuda", "mps")


def first_reached(run: Run, threshold: Threshold) -> Reached | None:
    """The first validation (in step order) whose metric met the threshold; a curve that
    crosses, falls back and crosses again counts its first crossing."""
    if run.metric != threshold.metric:
        return None
    for step, value in sorted(dict(run.curve).items()):
        if threshold.met_by(value):
            cpu, wall = run.clock.get(step, (None, None))
            return Reached(step, cpu, wall)
    return None


def hardware_text(hardware: dict[str, Any]) -> str:
    """``AMD EPYC, 2 cores, 1 torch thread`` or ``NVIDIA H200 x1 (host: ...)``."""
    if not hardware:
        return ""
    threads = hardware.get("torch_threads")
    cpu = f"{hardware.get('cpu', '?')}, {hardware.get('cpu_cores', '?')} cores"
    if threads is not None:
        cpu += f", {threads} torch thread{'s' if threads != 1 else ''}"
    if hardware.get("gpu"):
        return f"{hardware['gpu']} x{hardware.get('devices', 1)} (host: {cpu})"
    return cpu


def group_hardware(group: Group) -> str:
    texts = dict.fromkeys(hardware_text(run.hardware) for run in group.runs)
    return "; ".join(t for t in texts if t)


@dataclass(frozen=True)
class GroupTime:
    """A threshold over a group's timed seeds: how many reached it, and their mean times."""

    reached: int
    timed: int
    cpu_seconds: float | None
    wall_seconds: float | None
    gpu: bool

    def text(self) -> str:
        if self.timed == 0:
            return ""
        if self.reached < self.timed:
            return NOT_REACHED + (f" ({self.reached}/{self.timed})" if self.reached else "")
        return seconds_pair(self.cpu_seconds, self.wall_seconds, self.gpu)


def seconds_pair(cpu: float | None, wall: float | None, gpu: bool) -> str:
    """``85.3 s (wall 90.1 s)``: CPU first, the wall (GPU) time in brackets."""
    text = fmt_seconds(cpu) or "?"
    if wall is not None:
        text += f" ({'GPU wall' if gpu else 'wall'} {fmt_seconds(wall)})"
    return text


def group_time(group: Group, threshold: Threshold) -> GroupTime:
    runs = [run for run in group.runs if timed(run) and run.metric == threshold.metric]
    hits = [hit for hit in (first_reached(run, threshold) for run in runs) if hit is not None]
    return GroupTime(
        reached=len(hits),
        timed=len(runs),
        cpu_seconds=mean_of([h.cpu_seconds for h in hits]),
        wall_seconds=mean_of([h.wall_seconds for h in hits]),
        gpu=any(on_gpu(run) for run in runs),
    )


def applicable(thresholds: list[Threshold], metric: str | None) -> list[Threshold]:
    return [t for t in thresholds if t.metric == metric]


def group_columns(row: Row, thresholds: list[Threshold]) -> dict[str, Any]:
    """The budget, cost and time-to-threshold columns appended to comparison.csv (numbers
    in seconds, mean per run over the group's seeds; empty where the runs have none)."""
    runs = row.group.runs
    cpu = mean_of([run.train.get("cpu_seconds") for run in runs])
    record: dict[str, Any] = {
        "train_steps": mean_of([run.train.get("steps") for run in runs]),
        "train_cpu_seconds": cpu,
        "train_cpu_hours": cpu / 3600 if cpu is not None else None,
        "train_wall_seconds": mean_of([run.train.get("wall_seconds") for run in runs]),
        "test_cpu_seconds": mean_of([run.test_time.get("cpu_seconds") for run in runs]),
        "test_wall_seconds": mean_of([run.test_time.get("wall_seconds") for run in runs]),
        "wall_is_gpu_time": any(on_gpu(run) for run in runs),
        "hardware": group_hardware(row.group),
    }
    for threshold in thresholds:
        result = group_time(row.group, threshold)
        met = result.timed > 0 and threshold.metric == row.metric
        whole = met and result.reached == result.timed
        record[f"reached_{threshold.key}"] = f"{result.reached}/{result.timed}" if met else ""
        record[f"cpu_seconds_to_{threshold.key}"] = result.cpu_seconds if whole else None
        record[f"wall_seconds_to_{threshold.key}"] = result.wall_seconds if whole else None
    return record


def group_table(rows: list[Row], thresholds: list[Threshold]) -> tuple[list[str], list[list]]:
    """Header and cells of the budget and time-to-threshold table, one line per group."""
    header = ["group", "steps", "train CPU", "train wall", "test CPU (wall)", "hardware"]
    header += [f"to {t.label}" for t in thresholds]
    cells = []
    for row in training(rows):
        runs = row.group.runs
        gpu = any(on_gpu(run) for run in runs)
        wall = mean_of([run.train.get("wall_seconds") for run in runs])
        test_cpu = mean_of([run.test_time.get("cpu_seconds") for run in runs])
        test_wall = mean_of([run.test_time.get("wall_seconds") for run in runs])
        line = [
            row.group.label,
            steps_text(row.group),
            fmt_seconds(mean_of([run.train.get("cpu_seconds") for run in runs])),
            fmt_seconds(wall) + (" (GPU)" if gpu and wall is not None else ""),
            seconds_pair(test_cpu, test_wall, gpu) if test_cpu is not None else "",
            group_hardware(row.group),
        ]
        line += [
            group_time(row.group, t).text() if t.metric == row.metric else "" for t in thresholds
        ]
        cells.append(line)
    return header, cells


def run_cells(run: Run, thresholds: list[Threshold]) -> list[str]:
    """One run's time to each threshold: ``step 400: 85.3 s (wall 90.1 s)`` or not reached."""
    cells = []
    for threshold in thresholds:
        if not timed(run) or run.metric != threshold.metric:
            cells.append("")
            continue
        hit = first_reached(run, threshold)
        cells.append(
            f"step {hit.step}: {seconds_pair(hit.cpu_seconds, hit.wall_seconds, on_gpu(run))}"
            if hit
            else NOT_REACHED
        )
    return cells


def run_table(rows: list[Row], thresholds: list[Threshold]) -> tuple[list[str], list[list]]:
    """Header and cells of the per-run table: every completed run, group by group."""
    header = ["group", "seed", "steps", "train CPU", "train wall"]
    header += [f"to {t.label}" for t in thresholds]
    cells = []
    for row in training(rows):
        for run in row.group.runs:
            wall = run.train.get("wall_seconds")
            cells.append(
                [
                    row.group.label,
                    str(run.config.get("seed", "")),
                    str(run.train.get("steps", "")),
                    fmt_seconds(run.train.get("cpu_seconds")),
                    fmt_seconds(wall) + (" (GPU)" if on_gpu(run) and wall is not None else ""),
                    *run_cells(run, thresholds),
                ]
            )
    return header, cells


def run_record(label: str, run: Run, thresholds: list[Threshold], base: Path) -> dict[str, Any]:
    """One line of time_to_accuracy.csv: the run's budget and its first crossings (steps:
    outer steps done, load.validation_step), its folder relative to ``base``."""
    record: dict[str, Any] = {
        "group": label,
        "seed": run.config.get("seed"),
        "metric": run.metric,
        "train_steps": run.train.get("steps"),
        "train_cpu_seconds": run.train.get("cpu_seconds"),
        "train_wall_seconds": run.train.get("wall_seconds"),
        "test_cpu_seconds": run.test_time.get("cpu_seconds"),
        "test_wall_seconds": run.test_time.get("wall_seconds"),
        "wall_is_gpu_time": on_gpu(run),
        "hardware": hardware_text(run.hardware),
    }
    for threshold in thresholds:
        known = timed(run) and run.metric == threshold.metric
        hit = first_reached(run, threshold) if known else None
        record[f"reached_{threshold.key}"] = (hit is not None) if known else None
        record[f"step_to_{threshold.key}"] = hit.step if hit else None
        record[f"cpu_seconds_to_{threshold.key}"] = hit.cpu_seconds if hit else None
        record[f"wall_seconds_to_{threshold.key}"] = hit.wall_seconds if hit else None
    record["path"] = relative(run.path, base)
    return record


def write_runs_time_csv(rows: list[Row], thresholds: list[Threshold], path: Path) -> None:
    """time_to_accuracy.csv: one line per completed run (empty cells: not reached, or no
    time logged, as ``reached_*`` tells)."""
    records = [run_record(row.group.label, run, thresholds, path.parent)
               for row in training(rows) for run in row.group.runs]  # fmt: skip
    write_records(records, path)


def append_markdown(rows: list[Row], thresholds: list[Threshold], path: Path) -> None:
    """Add the budget/time-to-threshold section, per group and per run, to comparison.md."""
    lines = ["", "## Budget and time to accuracy", "", LEGEND, ""]
    lines += markdown_table(*group_table(rows, thresholds))
    lines += ["", "### Per run", ""]
    lines += markdown_table(*run_table(rows, thresholds))
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


def print_time_table(rows: list[Row], thresholds: list[Threshold], console: Console) -> None:
    """A compact terminal view: steps, training CPU and CPU seconds to each threshold."""
    rows = training(rows)
    if not any(timed(run) for row in rows for run in row.group.runs):
        return
    table = Table(title="time to accuracy: training CPU seconds (mean over seeds)")
    for name in ["group", "steps", "train CPU", *(t.label for t in thresholds)]:
        table.add_column(name, overflow="fold")
    for row in rows:
        cpu = mean_of([run.train.get("cpu_seconds") for run in row.group.runs])
        times = [
            compact(group_time(row.group, t)) if t.metric == row.metric else "" for t in thresholds
        ]
        table.add_row(row.group.label, steps_text(row.group), fmt_seconds(cpu), *times)
    console.print(table)


def compact(result: GroupTime) -> str:
    if result.timed == 0 or result.reached == result.timed:
        return fmt_seconds(result.cpu_seconds) if result.timed else ""
    return result.text()
