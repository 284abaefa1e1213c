"""Group runs by the config keys that differ between them and aggregate over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from metalab.compare.load import Run

# Keys that never define a group: the seed is what is aggregated over; the rest change
# where or how fast a run goes, not what it computes.
IGNORED_KEYS = (
    "seed",
    "run_name",
    "resume",
    "strategy",
    "vmap_chunk",
    "vmap_memory_mib",
    "memory_format",
    "eval.batch",
    "eval.curve_points",
    "dataset.root",
    "dataset.download",
    "trainer.enable_progress_bar",
    "trainer.log_every_n_steps",
    "trainer.checkpoint_every_n_steps",
    "trainer.checkpoint_every_minutes",
    "trainer.accelerator",
    "trainer.devices",
)
IGNORED_PREFIXES = ("logger.", "hydra.", "numerics.")

# Student's t, two-sided 95%, by degrees of freedom (n seeds - 1); 1.96 beyond the table.
T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
       2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
       2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass
class Group:
    """Training runs that differ only in their seed; or, with ``evaluation`` set, the
    ``metalab-eval`` results of those runs' checkpoints under one protocol (one per
    checkpoint: an evaluation is another look at a run's weights, never another seed)."""

    key: dict[str, Any]  # the differing config values shared by its runs
    runs: list[Run]
    failed: list[Run] = field(default_factory=list)
    name: str = ""  # the readable label group_runs gives it (algorithm, differing keys)
    evaluation: str | None = None  # what was evaluated: "best.ckpt (ways=20)"
    source: Group | None = None  # the training group whose checkpoints were evaluated
    repeats: list[Run] = field(default_factory=list)  # evaluations of a checkpoint counted
    # training runs that have not ended (running, or killed): their curves so far, no test
    in_progress: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        base = self.source.label if self.source else self.name or "all runs"
        return f"{base}, eval of {self.evaluation}" if self.evaluation is not None else base

    @property
    def metric(self) -> str | None:
        return self.runs[0].metric if self.runs else None

    @property
    def seeds(self) -> list[Any]:
        return [r.config.get("seed") for r in self.runs]

    def test(self) -> tuple[float | None, float | None]:
        return mean_and_ci95([r.test_mean for r in self.runs], self.runs)

    def val_best(self) -> tuple[float | None, float | None]:
        values = [r.val_best for r in self.runs if r.val_best is not None]
        return mean_and_ci95(values, [])


def t95(n: int) -> float:
    return T95[n - 2] if 2 <= n <= len(T95) + 1 else 1.96


def mean_and_ci95(values: list[float], runs: list[Run]) -> tuple[float | None, float | None]:
    """Mean over seeds and the half-width of Student's t 95% interval. With one seed, the
    run's own interval over test tasks is the only uncertainty there is."""
    if not values:
        return None, None
    mean = statistics.fmean(values)
    if len(values) == 1:
        return mean, runs[0].test_ci95 if runs else None
    return mean, t95(len(values)) * statistics.stdev(values) / math.sqrt(len(values))


def ignored(key: str, extra: tuple[str, ...]) -> bool:
    return key in IGNORED_KEYS or key in extra or key.startswith(IGNORED_PREFIXES)


def differing_keys(runs: list[Run], extra_ignored: tuple[str, ...] = ()) -> list[str]:
    """Config keys whose value is not the same in every run, in config order."""
    keys: dict[str, None] = {}
    for run in runs:
        keys.update(dict.fromkeys(run.config))
    return [
        key
        for key in keys
        if not ignored(key, extra_ignored) and len({repr(run.config.get(key)) for run in runs}) > 1
    ]


def drop_redundant(keys: list[str], runs: list[Run]) -> list[str]:
    """Drop a key whose value follows from the keys kept (algorithm.first_order and
    algorithm.inner_steps follow from algorithm.name in a maml/fomaml/protonet sweep): it
    splits no group further, and labels stay short. ``algorithm.name`` and the other
    ``*.name`` keys are considered first, so they are the ones kept."""
    kept: list[str] = []
    for key in sorted(keys, key=display_rank):
        if not determined(runs, kept, key):
            kept.append(key)
    return [key for key in keys if key in kept]


def display_rank(key: str) -> tuple[int, int]:
    """algorithm.name first, then the other ``*.name`` keys, then the rest (stable sort)."""
    return (key != "algorithm.name", not key.endswith(".name"))


def determined(runs: list[Run], by: list[str], key: str) -> bool:
    """Whether ``key``'s value is the same in every two runs that agree on the ``by`` keys."""
    seen: dict[tuple, str] = {}
    for run in runs:
        value = repr(run.config.get(key))
        if seen.setdefault(tuple(repr(run.config.get(k)) for k in by), value) != value:
            return False
    return True


def value_text(value: Any) -> str:
    """A config value as it is typed on the command line: null, true, 0.001, [40, 40]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each key by its last part (``algorithm.inner_lr`` -> ``inner_lr``) unless two of
    ``keys`` end alike (``algorithm.lr``, ``optimizer.lr``): those keep their full name."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {
        key: name if last.count(name) == 1 else key for key, name in zip(keys, last, strict=True)
    }


def label_of(values: dict[str, Any], runs: list[Run], names: dict[str, str]) -> str:
    """``maml``, ``maml omniglot (inner_lr=0.1, shots=5)``: the algorithm (also when it does
    not differ), the differing ``*.name`` values bare, the other differing keys as
    key=value."""
    keys = sorted(values, key=display_rank)
    words = [value_text(values[k]) for k in keys if k.endswith(".name")]
    algorithms = {r.config.get("algorithm.name") for r in runs} - {None}
    if "algorithm.name" not in values and len(algorithms) == 1:
        words.insert(0, str(next(iter(algorithms))))
    settings = [f"{names[k]}={value_text(values[k])}" for k in keys if not k.endswith(".name")]
    text = " ".join(words)
    if settings:
        text += f" ({', '.join(settings)})" if text else ", ".join(settings)
    return text or "all runs"


def name_groups(groups: list[Group]) -> None:
    """Readable, distinct labels; where two would read alike (a value and the same text as
    a string), every label falls back to the full key=value list."""
    keys = list(dict.fromkeys(k for g in groups for k in g.key))
    names = short_names(keys)
    for group in groups:
        group.name = label_of(group.key, group.runs + group.failed + group.in_progress, names)
    if len({g.name for g in groups}) < len(groups):
        for group in groups:
            group.name = ", ".join(f"{k}={v!r}" for k, v in group.key.items()) or "all runs"


def protocol_text(protocol: dict[str, Any]) -> str:
    """``5-way 1-shot``, ``10-shot`` (regression), with the split when it is not test."""
    shots = protocol.get("shots")
    text = f"{shots}-shot" if shots is not None else ""
    if protocol.get("ways") is not None:
        text = f"{protocol['ways']}-way {text}".strip()
    if protocol.get("split", "test") != "test":
        text += f", split={protocol['split']}"
    return text or "protocol unknown"


# What metalab-eval sets in the config it records (evaluate.training_config): the protocol
# of the evaluation, which its label says, not a setting of the run it tested.
EVAL_OVERRIDES = (
    "dataset.test_ways",
    "dataset.test_shots",
    "dataset.test_queries",
    "algorithm.eval_inner_steps",
    "algorithm.eval_inner_lr",
    "eval.tasks",
)


def evaluation_text(run: Run, source: Run | None, varying: Sequence[str] = ()) -> str:
    """What an evaluation tested: the checkpoint, and how its protocol differs from the one
    the training run was tested with (``best.ckpt (ways=20)``, ``best.ckpt (same
    protocol)``); without the training run, the protocol itself and the ``varying`` keys of
    the protocol that tell such evaluations apart."""
    assert run.checkpoint is not None
    if source is None or not source.protocol:
        extra = [f"{key}={value_text(run.protocol.get(key))}" for key in varying]
        return f"{run.checkpoint.name} ({', '.join([protocol_text(run.protocol), *extra])})"
    changed = [f"{key}={value_text(value)}" for key, value in run.protocol.items()
               if key != "dataset" and source.protocol.get(key) != value]  # fmt: skip
    return f"{run.checkpoint.name} ({', '.join(changed) or 'same protocol'})"


def group_runs(
    runs: list[Run], by: list[str] | None = None, extra_ignored: tuple[str, ...] = ()
) -> list[Group]:
    """One group per combination of the differing keys (or of ``by``) of the training runs,
    in first-seen order, each followed by the groups of the evaluations of its checkpoints;
    evaluations of checkpoints not among the runs come last. Only training runs decide the
    keys: an evaluation's test-time overrides (dataset.test_ways=20) split no training
    group, and it is never counted as a seed of its run."""
    training = [run for run in runs if not run.is_eval]
    evaluations = [run for run in runs if run.is_eval]
    decide, ignore = (training, extra_ignored) if training else (evaluations, (
        *extra_ignored, *EVAL_OVERRIDES))  # fmt: skip
    keys = by if by else drop_redundant(differing_keys(decide, ignore), decide)
    groups: dict[tuple, Group] = {}
    for run in training:
        values = {key: run.config.get(key) for key in keys}
        group = groups.setdefault(tuple(map(repr, values.values())), Group(values, []))
        kind = "runs" if run.completed else ("in_progress" if run.in_progress else "failed")
        getattr(group, kind).append(run)
    trained = list(groups.values())
    name_groups(trained)
    return group_evaluations(trained, evaluations, keys)


def source_of(run: Run, trained: list[Group]) -> tuple[Group | None, Run | None]:
    """The group and training run whose checkpoint ``run`` evaluated: the run at the
    checkpoint's folder, or, for runs moved since (copied from a cluster), the one run of
    that folder name with the same seed."""
    if run.source is None:
        return None, None
    candidates = [(group, r) for group in trained
                  for r in group.runs + group.failed + group.in_progress]  # fmt: skip
    for group, candidate in candidates:
        if candidate.path.resolve() == run.source.resolve():
            return group, candidate
    moved = [(group, r) for group, r in candidates if r.path.name == run.source.name
             and r.config.get("seed") == run.config.get("seed")]  # fmt: skip
    return moved[0] if len(moved) == 1 else (None, None)


def group_evaluations(trained: list[Group], evaluations: list[Run], keys: list[str]) -> list[Group]:
    """``trained`` with, after each group, the groups of its checkpoints' evaluations: one
    per protocol, each checkpoint counted once (its latest evaluation; earlier ones go to
    ``repeats``). An evaluation whose run is not compared is grouped by its config's
    ``keys`` and its protocol, and listed at the end."""
    sources = {id(run): source_of(run, trained) for run in evaluations}
    alone = [run for run in evaluations if sources[id(run)][0] is None]
    varying = [key for key in dict.fromkeys(k for run in alone for k in run.protocol)
               if key not in ("dataset", "ways", "shots", "split")
               and len({repr(run.protocol.get(key)) for run in alone}) > 1]  # fmt: skip
    found: dict[tuple, Group] = {}
    names = short_names(keys)
    for run in evaluations:
        source_group, source_run = sources[id(run)]
        what = evaluation_text(run, source_run, varying)
        values = dict(source_group.key) if source_group else {k: run.config.get(k) for k in keys}
        ident = (id(source_group), tuple(map(repr, values.values())), what)
        if ident not in found:
            found[ident] = Group(values, [], evaluation=what, source=source_group)
            found[ident].name = label_of(values, [run], names)
        group = found[ident]
        (group.runs if run.completed else group.failed).append(run)
    for group in found.values():
        latest: dict[str, Run] = {}
        for run in sorted(group.runs, key=lambda r: (r.finished or 0.0, str(r.path))):
            if str(run.checkpoint) in latest:
                group.repeats.append(latest[str(run.checkpoint)])
            latest[str(run.checkpoint)] = run
        counted = {id(run) for run in latest.values()}
        group.runs = [run for run in group.runs if id(run) in counted]
    ordered: list[Group] = []
    for group in trained:
        ordered += [group, *(g for g in found.values() if g.source is group)]
    return ordered + [g for g in found.values() if g.source is None]
