"""What a reader needs before the numbers: the setting the runs were tested in, their
budget, when they ran and which code ran them, and where they are (paths relative to the
report, so the report and the runs can be moved or shared together)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from metalab.compare.groups import Group, protocol_text, value_text
from metalab.compare.load import Run
from metalab.compare.progress import status_counts
from metalab.compare.tables import fmt_seconds, mean_of
from metalab.compare.timing import hardware_text

PATHS_NOTE = ("Paths", "relative to this report's folder")


def setting_text(run: Run) -> str:
    """``omniglot 5-way 1-shot, 15 queries per class, 600 test tasks``: the test setting
    (inner steps belong to the algorithm, not the setting)."""
    protocol = run.protocol
    dataset = protocol.get("dataset") or run.config.get("dataset.name") or "?"
    if protocol.get("test_on"):  # cross-domain: trained on one data set, tested on others
        dataset = f"{dataset} -> {protocol['test_on']}"
    parts = [f"{dataset} {protocol_text(protocol)}"]
    if protocol.get("queries") is not None:
        if protocol.get("ways") is not None:
            parts.append(f"{protocol['queries']} queries per class")
        else:
            parts.append(f"{protocol['queries']} query points")
    tasks = protocol.get("tasks", run.test_tasks)
    if tasks is not None:
        parts.append(f"{tasks} {protocol.get('split', 'test')} tasks")
    return ", ".join(parts)


def counted(texts: list[str], noun: str = "run") -> str:
    """Distinct texts in first-seen order, each with its count when they are not all one."""
    counts = Counter(texts)
    if len(counts) == 1:
        return texts[0]
    return "; ".join(f"{text} ({plural(n, noun)})" for text, n in counts.items())


def span(values: list[Any]) -> str:
    numbers = sorted({int(v) for v in values if v is not None})
    if not numbers:
        return ""
    return f"{numbers[0]:,}" if len(numbers) == 1 else f"{numbers[0]:,}–{numbers[-1]:,}"


def budget_text(runs: list[Run]) -> str:
    """Outer steps per run, how often they validated, the CPU time per run and in all, and
    the CPU cap the runs were given; nothing without a completed run."""
    if not runs:
        return ""
    parts = []
    steps = span([run.train.get("steps") for run in runs])
    if steps:
        parts.append(f"{steps} outer steps per run")
    every = span([run.config.get("trainer.val_check_interval") for run in runs
                  if isinstance(run.config.get("trainer.val_check_interval"), int)])  # fmt: skip
    if every:
        parts.append(f"validation every {every} steps")
    cpu = [run.train.get("cpu_seconds") for run in runs]
    per_run = mean_of(cpu)
    if per_run is not None:
        total = sum(float(c) for c in cpu if c is not None)
        parts.append(f"training {fmt_seconds(per_run)} CPU per run ({fmt_seconds(total)} in all)")
    caps = {run.config.get("trainer.max_cpu_seconds") for run in runs} - {None}
    if caps:
        parts.append("cap " + " / ".join(fmt_seconds(float(c)) for c in sorted(caps)) + " CPU")
    return ", ".join(parts) or "not recorded (runs older than metalab's time logging)"


UNLIKE_SPEEDS = 1.5  # beyond the 10-20% drift of one shared machine between runs


def cpu_speed_text(runs: list[Run]) -> str:
    """The one-thread matmul rate the runs' machines measured (``results.json``'s
    ``hardware.matmul_gflops_per_thread``), with a warning when CPU seconds bought unlike
    amounts of work: budgets and times in CPU seconds then compare machines, not methods."""
    speeds = [
        float(speed)
        for run in runs
        if isinstance(speed := run.hardware.get("matmul_gflops_per_thread"), int | float)
        and speed > 0
    ]
    if not speeds:
        return ""
    low, high = min(speeds), max(speeds)
    rates = dict.fromkeys((f"{low:.0f}", f"{high:.0f}"))  # one number when both print alike
    text = "–".join(rates) + " GFLOP/s one-thread float32 matmul"
    if len(speeds) < len(runs):
        text += f" ({len(speeds)} of {plural(len(runs), 'run')} recorded it)"
    if high / low > UNLIKE_SPEEDS:
        text += (
            f"; the fastest machine computes {high / low:.1f}x as much a CPU-second as the "
            "slowest, so CPU budgets and times compare machines as well as methods"
        )
    return text


def when(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(seconds))


def date_text(runs: list[Run], now: float) -> str:
    finished = sorted(run.finished for run in runs if run.finished is not None)
    text = f"report written {when(now)}"
    if finished:
        first, last = when(finished[0]), when(finished[-1])
        text += f"; runs finished {first}" + (f" to {last}" if last != first else "")
    return text


def commit_text(runs: list[Run]) -> str:
    """``metalab 0.1.0 at a30b4e9``, or each commit with its number of runs."""
    if not runs:
        return ""
    commits = Counter((run.commit or "")[:7] or "unknown" for run in runs)
    versions = sorted({run.version for run in runs} - {None})
    prefix = f"metalab {', '.join(versions)} " if versions else ""
    if len(commits) == 1:
        (commit,) = commits
        return prefix + (f"at {commit}" if commit != "unknown" else "(commit not recorded)")
    return (
        prefix
        + f"from {len(commits)} commits: "
        + ", ".join(
            f"{commit} ({n} run{'s' if n != 1 else ''})" for commit, n in commits.most_common()
        )
    )


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


def runs_text(groups: list[Group], skipped: int) -> str:
    """``8 training runs in 3 groups (seeds 0 1 2); 2 metalab-eval results ...``."""
    trained = [g for g in groups if g.evaluation is None]
    evaluated = [g for g in groups if g.evaluation is not None]
    runs = [run for g in trained for run in g.runs]
    seeds = sorted(
        {run.config.get("seed") for run in runs} - {None}, key=lambda s: (str(type(s)), s)
    )
    parts = []
    if runs:
        seen = f" (seeds {' '.join(map(value_text, seeds))})" if seeds else ""
        parts.append(
            f"{plural(len(runs), 'training run')} in {plural(len(trained), 'group')}{seen}"
        )
    checks = sum(len(g.runs) + len(g.repeats) for g in evaluated)
    if checks:
        checkpoints = len({str(run.checkpoint) for g in evaluated for run in g.runs})
        parts.append(
            f"{plural(checks, 'metalab-eval result')} of {plural(checkpoints, 'checkpoint')}"
            + (", shown under the runs they tested, not as seeds" if trained else "")
        )
    failed = sum(len(g.failed) for g in groups)
    if failed:
        parts.append(f"{failed} not completed (kept out of the means)")
    if status_counts(groups):
        parts.append(status_counts(groups))
    if skipped:
        parts.append(f"{skipped} malformed, skipped")
    return "; ".join(parts)


def report_header(
    groups: list[Group], skipped: int = 0, now: float | None = None
) -> list[tuple[str, str]]:
    """(field, text) lines shown above every form of the table; the files add where their
    paths are relative to (PATHS_NOTE)."""
    trained = [run for g in groups if g.evaluation is None for run in g.runs]
    evaluations = [run for g in groups if g.evaluation is not None for run in g.runs]
    everything = [run for g in groups for run in g.runs + g.failed + g.repeats]
    lines = [("Setting", counted([setting_text(run) for run in trained]) if trained else "")]
    if evaluations:
        lines.append(
            ("Evaluations", counted([setting_text(run) for run in evaluations], "evaluation"))
        )
    lines.append(("Budget", budget_text(trained)))
    hardware = [hardware_text(run.hardware) for run in trained if run.hardware]
    if hardware:
        lines.append(("Hardware", counted(hardware)))
    lines.append(("CPU speed", cpu_speed_text(trained)))
    lines += [
        ("Runs", runs_text(groups, skipped)),
        ("Date", date_text(everything, time.time() if now is None else now)),
        ("Code", commit_text(everything)),
    ]
    return [(field, text) for field, text in lines if text]


def title(groups: list[Group]) -> str:
    """``metalab-compare: omniglot 5-way 1-shot`` when the training runs (or, without any,
    the evaluations) share one setting."""
    trained = [g for g in groups if g.evaluation is None and g.runs] or groups
    settings = {
        f"{run.protocol.get('dataset') or run.config.get('dataset.name')} "
        f"{protocol_text(run.protocol)}"
        for g in trained
        for run in g.runs
    }
    return "metalab-compare" + (f": {settings.pop()}" if len(settings) == 1 else "")
