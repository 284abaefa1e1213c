"""Training runs without a result yet: where each stands (steps, time, validation so far,
time to each threshold), so a long run or a sweep can be read while it trains, or after a
kill, before any test result exists. Their numbers never enter the comparison's means."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from metalab.compare.groups import Group
from metalab.compare.load import INTERRUPTED, RUNNING, STOPPED, UNFINISHED, Run
from metalab.compare.published import scale
from metalab.compare.tables import fmt, fmt_seconds, markdown_table, relative, write_records
from metalab.compare.timing import Threshold, first_reached, run_cells, timed
from metalab.run_status import resumable_checkpoint

TITLE = "Runs in progress"
NOTE = (
    "Training runs without a test result yet, kept out of the table above: running (its "
    "process is alive), stopped (killed: the same command with resume=auto continues it "
    "from checkpoints/last.ckpt), interrupted (stopped by a signal, a pre-emption: the same "
    "command continues it from the checkpoint it wrote), unfinished (its process ran on "
    "another host, so this report cannot tell). Steps: the last step logged, of the run's "
    "trainer.max_steps; train CPU and wall: at its last validation; the validation metric "
    "so far; times to the thresholds as for the completed runs."
)


def in_progress(groups: list[Group]) -> list[tuple[Group, Run]]:
    """Every run in progress, group by group, in the groups' order."""
    return [(group, run) for group in groups for run in group.in_progress]


def steps_text(run: Run) -> str:
    """``4,224 of 60,000``; the steps alone where the run has no step budget."""
    steps = run.train.get("steps")
    if steps is None:
        return ""
    budget = run.config.get("trainer.max_steps")
    of = f" of {int(budget):,}" if isinstance(budget, int) and budget > 0 else ""
    return f"{int(steps):,}{of}"


def last_validation(run: Run) -> str:
    """``95.61 at step 3,000``: the latest validation, in the report's unit."""
    if not run.curve:
        return ""
    step, value = run.curve[-1]
    return f"{fmt(value * scale(run.metric or ''))} at step {step:,}"


def checkpoint_text(run: Run) -> str:
    """The checkpoint resume=auto would continue from (interrupted.ckpt, last.ckpt)."""
    found = resumable_checkpoint(run.path)
    return found.name if found is not None else "none yet"


def progress_table(
    groups: list[Group], thresholds: list[Threshold], base: Path
) -> tuple[list[str], list[list[str]]]:
    """Header and cells: one line per run in progress."""
    header = ["group", "seed", "status", "steps", "train CPU", "train wall", "val (last)",
              "val best", *(f"to {t.label}" for t in thresholds), "checkpoint",
              "folder"]  # fmt: skip
    cells = []
    for group, run in in_progress(groups):
        best = run.val_best * scale(run.metric or "") if run.val_best is not None else None
        cells.append(
            [
                group.label,
                str(run.config.get("seed", "")),
                run.status,
                steps_text(run),
                fmt_seconds(run.train.get("cpu_seconds")),
                fmt_seconds(run.train.get("wall_seconds")),
                last_validation(run),
                fmt(best),
                *run_cells(run, thresholds),
                checkpoint_text(run),
                relative(run.path, base),
            ]
        )
    return header, cells


def status_counts(groups: list[Group]) -> str:
    """``2 in progress (1 running, 1 stopped)`` for the report's header; empty for none."""
    runs = [run for _, run in in_progress(groups)]
    if not runs:
        return ""
    counts = {status: sum(run.status == status for run in runs) for status in
              (RUNNING, STOPPED, INTERRUPTED, UNFINISHED)}  # fmt: skip
    shown = ", ".join(f"{n} {status}" for status, n in counts.items() if n)
    return f"{len(runs)} in progress ({shown}), listed apart: no test result yet"


def records(groups: list[Group], thresholds: list[Threshold], base: Path) -> list[dict[str, Any]]:
    """in_progress.csv: numbers in seconds and the metric's own unit (accuracy as a
    fraction, as results.json has it); empty where not logged or not reached."""
    lines = []
    for group, run in in_progress(groups):
        last_step, last_value = run.curve[-1] if run.curve else (None, None)
        record: dict[str, Any] = {
            "group": group.label,
            "seed": run.config.get("seed"),
            "status": run.status,
            "metric": run.metric,
            "train_steps": run.train.get("steps"),
            "max_steps": run.config.get("trainer.max_steps"),
            "train_cpu_seconds": run.train.get("cpu_seconds"),
            "train_wall_seconds": run.train.get("wall_seconds"),
            "val_last_step": last_step,
            "val_last": last_value,
            "val_best": run.val_best,
        }
        for threshold in thresholds:
            known = timed(run) and run.metric == threshold.metric
            hit = first_reached(run, threshold) if known else None
            record[f"step_to_{threshold.key}"] = hit.step if hit else None
            record[f"cpu_seconds_to_{threshold.key}"] = hit.cpu_seconds if hit else None
        record["checkpoint"] = checkpoint_text(run)
        record["path"] = relative(run.path, base)
        lines.append(record)
    return lines


def write_progress_csv(groups: list[Group], thresholds: list[Threshold], path: Path) -> bool:
    """Write in_progress.csv; False (no file) when every run has ended."""
    lines = records(groups, thresholds, path.parent)
    if lines:
        write_records(lines, path)
    return bool(lines)


def append_markdown(groups: list[Group], thresholds: list[Threshold], path: Path) -> None:
    if not in_progress(groups):
        return
    lines = ["", f"## {TITLE}", "", NOTE, ""]
    lines += markdown_table(*progress_table(groups, thresholds, path.parent))
    with path.open("a") as handle:
        handle.write("\n".join(lines) + "\n")


def print_progress(
    groups: list[Group], thresholds: list[Threshold], console: Console, base: Path
) -> None:
    if not in_progress(groups):
        return
    header, cells = progress_table(groups, thresholds, base)
    table = Table(title=f"{TITLE}: no test result yet, kept out of the means")
    drop = {"train wall", "folder"}  # the files keep them; the terminal stays narrow
    keep = [i for i, name in enumerate(header) if name not in drop]
    for i in keep:
        table.add_column(header[i], overflow="fold")
    for line in cells:
        table.add_row(*(line[i] for i in keep))
    console.print(table)
