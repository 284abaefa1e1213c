"""The comparison table's rows: one per group, in the unit papers report (accuracy in %)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from metalab.compare.groups import Group, mean_and_ci95
from metalab.compare.load import Run
from metalab.compare.published import Published, gap, lookup, outside_published_ci, scale


@dataclass
class Row:
    group: Group
    metric: str
    unit: str
    test_mean: float
    test_ci95: float | None
    val_best_mean: float | None
    published: Published | None
    outside_ci: bool | None
    gap: float | None = None  # ours minus the paper's, in the published unit (points for %)
    # test domain -> (mean over seeds, 95% CI), in the row's unit: see domain_results
    domains: dict[str, tuple[float, float | None]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Flat, stable columns for CSV and Markdown."""
        p = self.published
        group = self.group
        record: dict[str, Any] = {"group": group.label}
        record.update({k: v for k, v in group.key.items()})
        record.update(
            kind="eval" if group.evaluation is not None else "train",
            evaluation=group.evaluation,
            evaluated_group=group.source.label if group.source else None,
            metric=f"test/{self.metric}",
            unit=self.unit,
            runs=len(group.runs),
            failed=len(group.failed),
            seeds=" ".join(str(s) for s in group.seeds),
            repeated_evaluations=len(group.repeats),
            test_mean=self.test_mean,
            test_ci95=self.test_ci95,
            val_best_mean=self.val_best_mean,
            published=p.mean if p else None,
            published_ci95=p.ci95 if p else None,
            published_method=p.method if p else None,
            published_source=p.source if p else None,
            published_interval=p.interval if p and p.ci95 is not None else None,
            gap_to_published=self.gap,
            outside_published_ci=self.outside_ci,
        )
        for label, (mean, ci) in self.domains.items():
            record[f"test_mean[{label}]"] = mean
            record[f"test_ci95[{label}]"] = ci
        return record


def domain_results(group: Group, factor: float) -> dict[str, tuple[float, float | None]]:
    """Each test domain's result over the group's runs (dataset=multi's members, the domains of
    dataset.test): the mean over seeds with Student's t interval, or with one seed the run's
    own interval over that domain's test tasks; scaled by ``factor``."""
    labels = dict.fromkeys(label for run in group.runs for label in run.domains)
    results = {}
    for label in labels:
        runs = [run for run in group.runs if run.domains.get(label, (None, None))[0] is not None]
        if not runs:
            continue
        values = [run.domains[label][0] for run in runs]
        mean, ci = mean_and_ci95(values, runs)
        if len(runs) == 1:
            ci = runs[0].domains[label][1]
        results[label] = (factor * mean, factor * ci if ci is not None else None)
    return results


def off_the_tables(run: Run) -> bool:
    """Whether a run's test setting is one no published table has: tested on other domains
    (dataset.test) or on variable-way variable-shot episodes."""
    shots = run.protocol.get("shots")
    return bool(run.protocol.get("test_on")) or (shots is not None and not isinstance(shots, int))


def published_for(run: Run) -> Published | None:
    """The published number for a run's setting (none for one off the tables)."""
    return None if off_the_tables(run) else lookup(run.config, run.protocol)


def build_rows(groups: list[Group]) -> list[Row]:
    rows = []
    for group in groups:
        if not group.runs:
            continue
        metric = group.metric or "?"
        factor = scale(metric)
        mean, ci = group.test()
        val_mean, _ = group.val_best()
        first = group.runs[0]
        published = published_for(first)
        shown = factor * mean if mean is not None else float("nan")
        rows.append(
            Row(
                group=group,
                metric=metric,
                unit="%" if metric == "acc" else metric,
                test_mean=shown,
                test_ci95=factor * ci if ci is not None else None,
                val_best_mean=factor * val_mean if val_mean is not None else None,
                published=published,
                outside_ci=outside_published_ci(shown, published) if published else None,
                gap=gap(shown, published) if published and mean is not None else None,
                domains=domain_results(group, factor),
            )
        )
    return rows
