"""PNG plots: validation curves per group (over outer steps and over training CPU time), the
test-time adaptation curve (the test metric after each inner step), and test results next
to the published ones.

Every ``figure_*`` builds a matplotlib Figure (the tests read its axes: where the bars sit,
the legend's colours, the limits); ``plot_*`` saves it. A group keeps one colour in every
plot (``palette``); an evaluation of a group's checkpoints takes that group's colour, drawn
dashed (lines) or hatched (bars).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from matplotlib.patheffects import withStroke  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from metalab.compare.groups import t95  # noqa: E402
from metalab.compare.load import Run  # noqa: E402
from metalab.compare.published import Published, others, scale  # noqa: E402
from metalab.compare.rows import Row, off_the_tables  # noqa: E402
from metalab.compare.timing import (  # noqa: E402
    Threshold,
    first_reached,
    on_gpu,
    timed,
    training,
)

OURS, OUTSIDE, PUBLISHED, OTHERS = "tab:blue", "tab:red", "tab:gray", "lightgray"
EVAL_HATCH = "//"


def palette(rows: list[Row]) -> dict[int, str]:
    """id(group) -> its colour: C0, C1, ... in table order; an evaluation group takes the
    colour of the group whose checkpoints it tested."""
    colours: dict[int, str] = {}
    for row in rows:
        source = row.group.source
        if source is not None and id(source) in colours:
            colours[id(row.group)] = colours[id(source)]
        else:
            colours[id(row.group)] = f"C{len(set(colours.values())) % 10}"
    return colours


def save(fig: Figure | None, path: Path) -> bool:
    """Write the figure (False, no file, for None) and free it."""
    if fig is None:
        return False
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def unit_label(metric: str) -> str:
    return metric + (" (%)" if metric == "acc" else "")


def metric_axis(ax, metric: str, highest: float) -> None:
    """An axis that holds 0 (accuracy 0-100%, MSE from 0) and shows every error bar: a
    bar's length is its value, and chance level stays in view. A metric drawn below 0 (a
    reinforcement-learning return) runs from its lowest point up to 0."""
    lowest = min(0.0, float(ax.dataLim.y0))
    if metric == "acc":
        ax.set_ylim(0.0, max(100.0, highest * 1.01))
    elif lowest < 0:
        ax.set_ylim(lowest * 1.08, max(highest * 1.08, 0.0))
    else:
        ax.set_ylim(0.0, max(highest * 1.08, 1e-12))


def figure_validation_curves(rows: list[Row]) -> Figure | None:
    """Mean validation metric over seeds after each validated outer step (the step
    Lightning logged + 1: load.validation_step), the band spanning the seeds. None when no
    run has a curve."""
    colours = palette(rows)
    rows = [r for r in training(rows) if any(run.curve for run in r.group.runs)]
    if not rows:
        return None
    metrics = sorted({row.metric for row in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        factor = scale(metric)
        for row in (r for r in rows if r.metric == metric):
            curves = [dict(run.curve) for run in row.group.runs if run.curve]
            steps = sorted(set().union(*curves))
            values = np.array([[c.get(s, np.nan) for s in steps] for c in curves]) * factor
            colour = colours[id(row.group)]
            ax.plot(steps, np.nanmean(values, axis=0), marker="o", ms=3, color=colour,
                    label=row.group.label)  # fmt: skip
            if len(curves) > 1:
                low, high = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
        ax.set_xlim(left=0)
        ax.set_xlabel("outer steps (meta-training steps done when validated)")
        ax.set_ylabel(f"validation {unit_label(metric)}")
        ax.set_title(f"val/{metric}: mean over seeds (band: min-max)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_validation_curves(rows: list[Row], path: Path) -> bool:
    return save(figure_validation_curves(rows), path)


def adaptation(row: Row) -> tuple[list[int], np.ndarray, np.ndarray]:
    """The group's test metric after each scored inner step: (steps, mean over seeds, 95%
    CI half-width: Student's t over the seeds, or the run's own CI over tasks for one)."""
    curves = [{s: (m, c) for s, m, c in run.per_step} for run in row.group.runs if run.per_step]
    steps = sorted(set().union(*curves)) if curves else []
    factor = scale(row.metric)
    means = np.array([[c[s][0] if s in c else np.nan for s in steps] for c in curves]) * factor
    mean = np.nanmean(means, axis=0) if curves else np.array([])
    spread = []
    for index, step in enumerate(steps):
        column = means[:, index][~np.isnan(means[:, index])]
        if len(column) > 1:
            spread.append(t95(len(column)) * column.std(ddof=1) / np.sqrt(len(column)))
        else:
            ci = next(c[step][1] for c in curves if step in c)
            spread.append(ci * factor if ci is not None else 0.0)
    return steps, mean, np.array(spread)


def figure_adaptation_curves(rows: list[Row]) -> Figure | None:
    """The test-time adaptation curve: each group's test metric after 0, 1, ... inner steps
    on the test tasks' support sets, one line per group (band: 95% CI); evaluations dashed
    in their runs' colour; a method without inner steps as one point and a dotted level.
    None when no run recorded ``per_step``."""
    colours = palette(rows)
    rows = [r for r in rows if any(run.per_step for run in r.group.runs)]
    if not rows:
        return None
    metrics = sorted({row.metric for row in rows})
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        highest, points = 0.0, 0
        for row in (r for r in rows if r.metric == metric):
            steps, mean, ci = adaptation(row)
            colour = colours[id(row.group)]
            evaluated = row.group.evaluation is not None
            style = "--" if evaluated else "-"
            if len(steps) == 1:  # a metric method: no inner loop to adapt with
                dodge = 0.06 * points  # side by side, not on top of each other
                points += 1
                ax.errorbar([steps[0] + dodge], mean, yerr=ci, fmt="s", color=colour,
                            mfc="white" if evaluated else colour, capsize=4,
                            label=f"{row.group.label} (no inner steps)")  # fmt: skip
                ax.axhline(mean[0], color=colour, ls=":", lw=1)
            else:
                ax.plot(steps, mean, style, marker="o", ms=3, color=colour,
                        label=row.group.label)  # fmt: skip
                ax.fill_between(steps, mean - ci, mean + ci, color=colour, alpha=0.15, lw=0)
            highest = max(highest, float(np.nanmax(mean + ci)))
        metric_axis(ax, metric, highest)
        ax.set_xlabel("policy-gradient steps at test time (on fresh trajectories of each goal)"
                      if metric == "return" else
                      "inner steps at test time (on each test task's support set)")  # fmt: skip
        ax.set_ylabel(f"test {unit_label(metric)}")
        ax.set_title(f"test-time adaptation: test/{metric} after each inner step "
                     "(band: 95% CI)", fontsize=10)  # fmt: skip
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_adaptation_curves(rows: list[Row], path: Path) -> bool:
    return save(figure_adaptation_curves(rows), path)


def figure_test_vs_published(rows: list[Row]) -> Figure:
    """Our test metric (95% CI over seeds) beside the published number for the same
    setting, one tick per group (evaluations hatched), each tick's bars centred on it and
    labelled with their value; the other published methods of the setting after them.
    ``rows`` share one metric."""
    metric = rows[0].metric
    context = contextual(rows)
    ticks = len(rows) + len(context)
    fig, ax = plt.subplots(figsize=(min(16.0, 3.5 + 0.85 * ticks), 5.0), layout="constrained")
    labels, tops, kinds, drawn = [], [0.0], set(), []
    for x, row in enumerate(rows):
        evaluated = row.group.evaluation is not None
        colour = OUTSIDE if row.outside_ci else OURS
        kinds |= {colour, "eval"} if evaluated else {colour}
        err = row.test_ci95 or 0.0
        pub = row.published
        width = 0.4 if pub else 0.5
        bars = ax.bar(x - 0.2 if pub else x, row.test_mean, width, yerr=err, capsize=4,
                      color=colour, hatch=EVAL_HATCH if evaluated else None,
                      edgecolor="white" if evaluated else None)  # fmt: skip
        drawn.append((bars, "white"))
        tops.append(row.test_mean + err)
        if pub:
            kinds.add(PUBLISHED)
            bars = ax.bar(x + 0.2, pub.mean, width, yerr=pub.ci95 or 0.0, capsize=4,
                          color=PUBLISHED)  # fmt: skip
            drawn.append((bars, "white"))
            tops.append(pub.mean + (pub.ci95 or 0.0))
        labels.append(row.group.label)
    for x, published in enumerate(context, start=len(rows)):
        kinds.add(OTHERS)
        bars = ax.bar(x, published.mean, 0.4, yerr=published.ci95 or 0.0, capsize=4,
                      color=OTHERS, hatch="..", edgecolor="gray")  # fmt: skip
        drawn.append((bars, "black"))
        tops.append(published.mean + (published.ci95 or 0.0))
        labels.append(f"{published.method} (published)")
    ax.set_xticks(np.arange(len(labels)), [textwrap.fill(t, 24) for t in labels],
                  rotation=30, ha="right", rotation_mode="anchor", fontsize=7)  # fmt: skip
    ax.set_xlim(-0.6, len(labels) - 0.4)
    metric_axis(ax, metric, max(tops))
    for bars, colour in drawn:
        label_bars(ax, bars, colour)
    ax.set_ylabel(f"test {unit_label(metric)}")
    flagged = " (red: outside the published CI)" if OUTSIDE in kinds else ""
    ax.set_title(f"test {metric}, mean ± 95% CI{flagged}", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(handles=legend_handles(kinds), fontsize=8, loc="upper left",
              bbox_to_anchor=(1.01, 1.0))  # fmt: skip
    return fig


def label_bars(ax, bars, colour: str) -> None:
    """Each bar's value written up its middle (an axis from 0 shows lengths, the label the
    digits), or above a bar too short to hold it."""
    top = ax.get_ylim()[1]
    for bar in bars:
        height = bar.get_height()
        if not np.isfinite(height):
            continue
        x = bar.get_x() + bar.get_width() / 2
        text = f"{height:.1f}" if abs(height) >= 10 else f"{height:.3g}"
        inside = height >= 0.25 * top
        ax.annotate(text, (x, height / 2 if inside else height), ha="center",
                    va="center" if inside else "bottom", rotation=90, fontsize=7,
                    color=colour if inside else "black",
                    xytext=(0, 0 if inside else 3), textcoords="offset points",
                    path_effects=[withStroke(linewidth=2.5, foreground=bar.get_facecolor())]
                    if inside else None)  # fmt: skip


def legend_handles(kinds: set[str]) -> list[Patch]:
    """One swatch per kind of bar drawn, in the colour it is drawn in."""
    entries = [
        (OURS, Patch(facecolor=OURS, label="metalab")),
        (OUTSIDE, Patch(facecolor=OUTSIDE, label="metalab, outside the published CI")),
        (
            "eval",
            Patch(
                facecolor="white",
                edgecolor="black",
                hatch=EVAL_HATCH,
                label="metalab-eval of the runs' checkpoints",
            ),
        ),  # fmt: skip
        (PUBLISHED, Patch(facecolor=PUBLISHED, label="published (same method)")),
        (
            OTHERS,
            Patch(
                facecolor=OTHERS, edgecolor="gray", hatch="..", label="published (other methods)"
            ),
        ),  # fmt: skip
    ]
    return [patch for kind, patch in entries if kind in kinds]


def plot_test_vs_published(rows: list[Row], path: Path) -> None:
    save(figure_test_vs_published(rows), path)


def contextual(rows: list[Row]) -> list[Published]:
    """The other methods' published numbers for the one dataset and ways/shots setting all
    training rows share (an evaluation at other ways has its own published number, on its
    own bar); none where the rows span several settings."""
    rows = training(rows)
    if any(off_the_tables(run) for row in rows for run in row.group.runs[:1]):
        return []  # a setting no table has (other test domains, variable episodes)
    settings = {
        (
            run.config.get("dataset.name"),
            run.protocol.get("ways", run.config.get("dataset.ways")),
            run.protocol.get("shots", run.config.get("dataset.shots")),
        )
        for row in rows
        for run in row.group.runs[:1]
    }
    if len(settings) != 1 or None in next(iter(settings))[::2]:
        return []
    dataset, ways, shots = settings.pop()
    shown = {row.group.runs[0].config.get("algorithm.name") for row in rows}
    return others(dataset, ways, int(shots), exclude=shown - {None})


def figure_metric_vs_cpu_time(rows: list[Row], thresholds: list[Threshold]) -> Figure | None:
    """Validation metric against training CPU time, one line per run in its group's colour,
    the thresholds as dashed lines and each first crossing marked: a faster engine or a
    better recipe shows up as a curve further left. None when no run logged its time."""
    colours = palette(rows)
    rows = training(rows)
    metrics = sorted({row.metric for row in rows if any(map(timed, row.group.runs))})
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 4.5), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        shown = [r for r in rows if r.metric == metric]
        seconds = [x for r in shown for run in r.group.runs for x, _ in time_points(run)]
        seconds = seconds or [1.0]
        unit = 3600.0 if max(seconds) > 7200 else 1.0  # hours past two hours
        draw_time_curves(ax, shown, thresholds, unit, colours)
        if min(seconds) > 0 and max(seconds) / min(seconds) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(f"training CPU {'hours' if unit > 1 else 'seconds'} (all threads)")
        ax.set_ylabel(f"validation {unit_label(metric)}")
        gpu = any(on_gpu(run) for r in shown for run in r.group.runs)
        ax.set_title(
            f"val/{metric} vs training CPU time" + (" (GPU runs: host CPU)" if gpu else "")
        )
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_metric_vs_cpu_time(rows: list[Row], thresholds: list[Threshold], path: Path) -> bool:
    return save(figure_metric_vs_cpu_time(rows, thresholds), path)


def time_points(run) -> list[tuple[float, float]]:
    """(CPU seconds, validation metric) at each timed validation, in step order."""
    return [(run.clock[step][0], value) for step, value in sorted(dict(run.curve).items())
            if step in run.clock]  # fmt: skip


def draw_time_curves(
    ax, rows: list[Row], thresholds: list[Threshold], unit: float, colours: dict[int, str]
) -> None:
    """One line per timed run (the group's colour, labelled once) with x in CPU seconds /
    ``unit``, its first crossings marked, and the thresholds of this metric."""
    factor = scale(rows[0].metric)
    for row in rows:
        color = colours[id(row.group)]
        label: str | None = row.group.label
        for run in row.group.runs:
            points = time_points(run)
            if not points:
                continue
            xs, ys = zip(*points, strict=True)
            ax.plot(
                np.array(xs) / unit, np.array(ys) * factor,
                color=color, marker="o", ms=3, alpha=0.8, label=label,
            )  # fmt: skip
            label = None
            for threshold in thresholds:
                hit = first_reached(run, threshold)
                if hit is not None and hit.cpu_seconds is not None:
                    y = threshold.value * factor
                    ax.plot(hit.cpu_seconds / unit, y, "x", color=color, ms=7)
    for threshold in (t for t in thresholds if t.metric == rows[0].metric):
        ax.axhline(threshold.value * factor, color="gray", ls="--", lw=0.8)
        ax.annotate(threshold.label, (0, threshold.value * factor), xycoords=("axes fraction",
                    "data"), fontsize=7, color="gray", va="bottom")  # fmt: skip


def figure_progress_curves(
    runs: list[tuple[str, Run]], thresholds: list[Threshold]
) -> Figure | None:
    """The validation curves so far of the runs in progress, (label, run) pairs: over outer
    steps (left) and over training CPU time (right, where logged), the thresholds dashed.
    None when none has validated yet."""
    runs = [(label, run) for label, run in runs if run.curve and run.metric]
    if not runs:
        return None
    metrics = sorted({run.metric for _, run in runs})
    fig, axes = plt.subplots(len(metrics), 2, figsize=(13, 4.5 * len(metrics)), squeeze=False)
    for (by_step, by_time), metric in zip(axes, metrics, strict=True):
        factor = scale(metric)
        shown = [(label, run) for label, run in runs if run.metric == metric]
        seconds = [x for _, run in shown for x, _ in time_points(run)] or [1.0]
        unit = 3600.0 if max(seconds) > 7200 else 1.0
        for index, (label, run) in enumerate(shown):
            colour = f"C{index % 10}"
            steps, values = zip(*run.curve, strict=True)
            text = f"{label} (seed {run.config.get('seed')}, {run.status})"
            by_step.plot(steps, np.array(values) * factor, marker="o", ms=3, color=colour,
                         label=text)  # fmt: skip
            points = time_points(run)
            if points:
                xs, ys = zip(*points, strict=True)
                by_time.plot(np.array(xs) / unit, np.array(ys) * factor, marker="o", ms=3,
                             color=colour, label=text)  # fmt: skip
        for ax in (by_step, by_time):
            for threshold in (t for t in thresholds if t.metric == metric):
                ax.axhline(threshold.value * factor, color="gray", ls="--", lw=0.8)
            ax.set_ylabel(f"validation {unit_label(metric)}")
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=7)
        by_step.set_xlabel("outer steps (meta-training steps done when validated)")
        by_step.set_title(f"val/{metric} so far, runs in progress")
        by_time.set_xlabel(f"training CPU {'hours' if unit > 1 else 'seconds'} (all threads)")
        by_time.set_title(f"val/{metric} vs training CPU time so far")
    fig.tight_layout()
    return fig


def plot_progress_curves(
    runs: list[tuple[str, Run]], thresholds: list[Threshold], path: Path
) -> bool:
    return save(figure_progress_curves(runs, thresholds), path)
