"""One run as metalab-compare sees it: its config, test result and validation curve.

A results.json or metrics.csv that cannot be read as metalab wrote it (not JSON, a list, a
``"mean": "abc"``) raises ``MalformedRun`` naming the file and what is wrong: the comparison
skips that run with a warning instead of stopping on a traceback.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from metalab import run_lock
from metalab.errors import MetalabError

# A training run without results.json: its process is alive (it writes results.json when it
# ends), or it was killed (resume=auto continues it), or it runs on another host.
RUNNING, STOPPED, UNFINISHED = "running", "stopped", "unfinished"
# results.json of a training run stopped by a signal (SIGTERM, a pre-emption): its
# "checkpoint" is the one it wrote to resume from, not one it tested
INTERRUPTED = "interrupted"


class MalformedRun(MetalabError):
    """A run's results.json, metrics.csv or .hydra/config.yaml that cannot be read: that run
    is skipped, the others are still compared. The message is "<file>: <what is wrong>"."""


class _Invalid(ValueError):
    """What is wrong with one value of a results.json; load_run adds the file's path."""


@dataclass
class Run:
    path: Path
    status: str
    config: dict[str, Any]  # flattened: {"algorithm.name": "maml", ...}
    metric: str | None = None  # "acc" or "mse"
    test_mean: float | None = None
    test_ci95: float | None = None
    test_tasks: int | None = None
    val_best: float | None = None
    protocol: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    # (outer steps done, val metric): see validation_step
    curve: list[tuple[int, float]] = field(default_factory=list)
    # outer steps done -> (CPU, wall) seconds of training at that validation; empty for runs
    # logged before metalab recorded time (budget.TrainingClock)
    clock: dict[int, tuple[float, float | None]] = field(default_factory=dict)
    # the test metric after each inner step scored: (inner step, mean, 95% CI over tasks)
    per_step: list[tuple[int, float, float | None]] = field(default_factory=list)
    train: dict[str, Any] = field(default_factory=dict)  # steps, cpu_seconds, wall_seconds
    test_time: dict[str, Any] = field(default_factory=dict)  # cpu_seconds, wall_seconds
    hardware: dict[str, Any] = field(default_factory=dict)  # cpu, torch_threads, gpu, ...
    # test domain -> (mean, 95% CI over its tasks): dataset=multi's members, dataset.test's
    # domains (results.json's test/<domain>/<metric>); empty for one plain test set
    domains: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    checkpoint: Path | None = None  # metalab-eval: the checkpoint it tested
    commit: str | None = None  # git commit of the metalab that wrote it
    version: str | None = None  # metalab version
    finished: float | None = None  # when results.json was written (its mtime, epoch seconds)

    @property
    def completed(self) -> bool:
        return self.status == "completed" and self.test_mean is not None

    @property
    def in_progress(self) -> bool:
        """A training run that has not ended (running, or killed and resumable): no test
        result yet, only its validation curve so far."""
        return self.status in (RUNNING, STOPPED, UNFINISHED, INTERRUPTED)

    @property
    def is_eval(self) -> bool:
        """A ``metalab-eval`` of a checkpoint: a second look at a training run's weights,
        never a further seed of it."""
        return self.checkpoint is not None

    @property
    def source(self) -> Path | None:
        """The training run whose checkpoint an evaluation tested (``<run>/checkpoints/x.ckpt``
        -> ``<run>``); None for a training run or a checkpoint kept elsewhere."""
        if self.checkpoint is None or self.checkpoint.parent.name != "checkpoints":
            return None
        return self.checkpoint.parent.parent


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def read_config(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    """The resolved config stored in results.json, else Hydra's .hydra/config.yaml."""
    if isinstance(results.get("config"), dict):
        return flatten(results["config"])
    hydra_config = run_dir / ".hydra" / "config.yaml"
    if not hydra_config.is_file():
        return {}
    try:
        config = yaml.safe_load(hydra_config.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        problem = str(error).splitlines()[0]
        raise MalformedRun(f"{hydra_config}: not YAML ({problem})") from None
    if config is not None and not isinstance(config, dict):
        raise MalformedRun(f"{hydra_config}: holds no mapping of config keys")
    return flatten(config or {})


def metrics_files(run_dir: Path) -> list[Path]:
    """A run's metrics.csv files, oldest first: those of the attempts a resumed run moved to
    attempt-N/ (N = 1, 2, ...), then its own. Together they hold the whole curve."""
    attempts = sorted(
        (p for p in run_dir.glob("attempt-*") if p.name.split("-", 1)[1].isdigit()),
        key=lambda p: int(p.name.split("-", 1)[1]),
    )
    return [p / "metrics.csv" for p in [*attempts, run_dir] if (p / "metrics.csv").is_file()]


def _csv_rows(path: Path) -> Iterator[dict[str, str]]:
    """The rows of a CSV file; a file that is not CSV raises MalformedRun naming it. A last
    line without its newline is a row the run is writing at this moment (metalab-compare
    reads runs in progress too): it is left for the next reading."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise MalformedRun(f"{path}: not CSV text ({error})") from None
    if text and not text.endswith(("\n", "\r")):
        text = text[: max(text.rfind("\n"), text.rfind("\r")) + 1]
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        if "step" not in (reader.fieldnames or []):  # Lightning's CSVLogger writes it
            raise MalformedRun(
                f"{path}: its header has no step column, so it is not the metrics.csv "
                "metalab writes"
            )
        yield from reader
    except csv.Error as error:
        raise MalformedRun(f"{path}: line {reader.line_num} is not CSV ({error})") from None


def _csv_number(path: Path, row: dict[str, str], column: str) -> float:
    try:
        return float(row[column])
    except (TypeError, ValueError):
        raise MalformedRun(f"{path}: {column}={_shown(row[column])} is not a number") from None


def validation_step(logged: float) -> int:
    """The outer steps done when a validation ran, from the ``step`` Lightning logged it at.

    Lightning runs the validation that follows the N-th outer step before it counts that
    step for its loggers, so metrics.csv has it at ``step`` N-1 (a run with
    ``trainer.max_steps=4 trainer.val_check_interval=2`` logs its validations at steps 1
    and 3, after 2 and 4 outer steps; tests/report/test_compare_report.py checks it on a real run).
    """
    return int(logged) + 1


def read_curve(metrics_csv: Path | list[Path], metric: str) -> list[tuple[int, float]]:
    """The validation metric by outer steps done (validation_step) from Lightning's CSV
    logger; from several files (a resumed run's attempts, oldest first), a step logged again
    keeps its last value."""
    column = f"val/{metric}"
    curve: dict[int, float] = {}
    for path in [metrics_csv] if isinstance(metrics_csv, Path) else metrics_csv:
        if not path.is_file():
            continue
        for row in _csv_rows(path):
            if row.get(column) not in (None, "") and row.get("step") not in (None, ""):
                step = validation_step(_csv_number(path, row, "step"))
                curve[step] = _csv_number(path, row, column)
    return sorted(curve.items())


def read_clock(metrics_csv: Path | list[Path]) -> dict[int, tuple[float, float | None]]:
    """``time/cpu_seconds`` and ``time/wall_seconds`` by outer steps done (they are logged
    with each validation, validation_step), from one file or a resumed
    run's files oldest first. A step logged twice (a resumed run validating again where an
    interrupted attempt had) keeps its last row, as the curve does."""
    clock: dict[int, tuple[float, float | None]] = {}
    for path in [metrics_csv] if isinstance(metrics_csv, Path) else metrics_csv:
        if not path.is_file():
            continue
        for row in _csv_rows(path):
            if row.get("time/cpu_seconds") in (None, "") or row.get("step") in (None, ""):
                continue
            wall = row.get("time/wall_seconds")
            wall_value = _csv_number(path, row, "time/wall_seconds") if wall else None
            step = validation_step(_csv_number(path, row, "step"))
            clock[step] = (_csv_number(path, row, "time/cpu_seconds"), wall_value)
    return clock


JSON_KINDS = {list: "a list", str: "a string", int: "a number", float: "a number",
              bool: "a boolean", type(None): "null"}  # fmt: skip


def read_results(path: Path) -> dict[str, Any]:
    """A results.json as a dict; anything else (unreadable, not JSON, a JSON list) raises
    MalformedRun naming the file."""
    try:
        results = json.loads(path.read_text())
    except OSError as error:
        raise MalformedRun(f"{path}: cannot be read ({error.strerror or error})") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise MalformedRun(f"{path}: not JSON ({error})") from None
    if not isinstance(results, dict):
        kind = JSON_KINDS.get(type(results), type(results).__name__)
        raise MalformedRun(f"{path}: holds {kind}, not the JSON object metalab writes")
    return results


def load_run(run_dir: Path) -> Run:
    """The run in ``run_dir``; MalformedRun if its results.json or metrics.csv is malformed.
    A training run that has no results.json yet is read as in progress (load_in_progress)."""
    path = run_dir / "results.json"
    if not path.exists():
        return load_in_progress(run_dir)
    results = read_results(path)
    try:
        return _run_of(run_dir, results)
    except _Invalid as error:
        raise MalformedRun(f"{path}: {error}") from None


def _run_of(run_dir: Path, results: dict[str, Any]) -> Run:
    # results.json without a status predates failure recording: it was written on success
    status = results.get("status", "completed")
    if not isinstance(status, str):
        raise _Invalid(f"status is {_shown(status)}, not text (completed, failed or interrupted)")
    run = Run(
        path=run_dir,
        status=status,
        config=read_config(run_dir, results),
        error=results.get("error"),
        checkpoint=_path(results, "checkpoint") if status != INTERRUPTED else None,
        commit=_typed(results, "git_commit", str, "text"),
        version=_typed(results, "metalab_version", str, "text"),
        finished=_mtime(run_dir / "results.json"),
    )
    if run.in_progress:  # interrupted: the step the signal stopped it at is the latest
        so_far(run)
        step = _typed(results, "step", int, "a whole number")
        if step is not None and step > run.train.get("steps", -1):
            run.train["steps"] = step
        return run
    metrics = _typed(results, "metrics", dict, "an object") or {}
    tests = {k: v for k, v in metrics.items() if k.startswith("test/")}
    if not tests:
        return run
    key, summary = next(iter(tests.items()))
    if not isinstance(summary, dict):
        raise _Invalid(f"metrics.{key} is {_shown(summary)}, not an object with mean and ci95")
    run.metric = _typed(summary, "metric", str, "text", f"metrics.{key}.") or key.split("/", 1)[1]
    run.test_mean = _number(summary, "mean", f"metrics.{key}.")
    run.test_ci95 = _number(summary, "ci95", f"metrics.{key}.")
    run.test_tasks = _typed(summary, "tasks", int, "a whole number", f"metrics.{key}.")
    run.per_step = _per_step(summary.get("per_step"), f"metrics.{key}.per_step")
    run.val_best = _number(metrics, f"val/{run.metric}_best", "metrics.")
    run.domains = _domains(tests, run.metric)
    run.protocol = dict(_typed(results, "protocol", dict, "an object") or {})
    run.train = _numbers(results, "train", ("steps", "seconds", "cpu_seconds", "wall_seconds"))
    run.test_time = _numbers(results, "test", ("cpu_seconds", "wall_seconds"))
    run.hardware = _dict(results.get("hardware"))
    run.curve = read_curve(metrics_files(run_dir), run.metric)
    run.clock = read_clock(metrics_files(run_dir))
    return run


def load_in_progress(run_dir: Path) -> Run:
    """A training run that has written no results.json: its config and progress so far
    (so_far); its status says whether its process is alive (run_lock.owner_alive)."""
    alive = run_lock.owner_alive(run_dir)
    status = RUNNING if alive else (STOPPED if alive is False else UNFINISHED)
    return so_far(Run(path=run_dir, status=status, config=read_config(run_dir, {})))


def so_far(run: Run) -> Run:
    """A run in progress with its validation curve and clock so far (every attempt's
    metrics.csv), the outer steps logged so far in ``train["steps"]`` and the CPU/wall
    seconds at its last validation in ``train``."""
    files = metrics_files(run.path)
    steps = logged_steps(files)
    run.train = {"steps": steps} if steps is not None else {}
    run.metric = logged_metric(files)
    if run.metric is None:
        return run
    run.curve = read_curve(files, run.metric)
    run.clock = read_clock(files)
    values = [value for _, value in run.curve]
    if values:
        run.val_best = min(values) if run.metric == "mse" else max(values)
    if run.clock:
        cpu, wall = run.clock[max(run.clock)]
        run.train |= {"cpu_seconds": cpu} | ({"wall_seconds": wall} if wall is not None else {})
    return run


def logged_metric(files: list[Path]) -> str | None:
    """The validation metric a run logs (``val/acc`` -> ``acc``; val/loss is not it)."""
    for path in reversed(files):
        try:
            with path.open(newline="") as handle:
                header = next(csv.reader(handle), [])
        except (OSError, csv.Error, UnicodeDecodeError) as error:
            raise MalformedRun(f"{path}: its header cannot be read as CSV ({error})") from None
        names = [c[4:] for c in header if c.startswith("val/") and c != "val/loss"]
        names = [n for n in names if not n.endswith("_best")]
        if names:
            return "acc" if "acc" in names else names[0]
    return None


def logged_steps(files: list[Path]) -> int | None:
    """The outer steps done by the last row any of the files logged (validation_step)."""
    steps = [validation_step(_csv_number(path, row, "step")) for path in files
             for row in _csv_rows(path) if row.get("step") not in (None, "")]  # fmt: skip
    return max(steps) if steps else None


def _domains(tests: dict[str, Any], metric: str) -> dict[str, tuple[float | None, float | None]]:
    """``test/<domain>/<metric>`` entries as {domain: (mean, ci95)}, in results.json's order."""
    found = {}
    for key, summary in tests.items():
        parts = key.split("/")
        if len(parts) != 3 or parts[2] != metric:
            continue
        if not isinstance(summary, dict):
            raise _Invalid(f"metrics.{key} is {_shown(summary)}, not an object with mean and ci95")
        found[parts[1]] = (
            _number(summary, "mean", f"metrics.{key}."),
            _number(summary, "ci95", f"metrics.{key}."),
        )
    return found


def _shown(value: Any) -> str:
    """A value as it appears in a warning: short enough for one line."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _typed(
    tree: dict[str, Any], key: str, kind: type | tuple[type, ...], what: str, prefix: str = ""
) -> Any:
    """``tree[key]`` if it is absent, null or of ``kind`` (a bool is no number); else _Invalid."""
    value = tree.get(key)
    if value is None or (isinstance(value, kind) and not isinstance(value, bool)):
        return value
    raise _Invalid(f"{prefix}{key} is {_shown(value)}, not {what}")


def _number(tree: dict[str, Any], key: str, prefix: str = "") -> float | None:
    """A number of results.json (NaN, as a diverged run records, reads as no number)."""
    value = _typed(tree, key, (int, float), "a number", prefix)
    return None if value is None or math.isnan(value) else float(value)


def _numbers(results: dict[str, Any], key: str, names: tuple[str, ...]) -> dict[str, Any]:
    """``train``/``test``: an object whose times and steps, where present, are numbers."""
    section = _typed(results, key, dict, "an object") or {}
    for name in names:
        _typed(section, name, (int, float), "a number", f"{key}.")
    return dict(section)


def _per_step(value: Any, where: str) -> list[tuple[int, float, float | None]]:
    """``per_step`` of a test summary: a list of {step, mean, ci95}, in step order; absent in
    results written before metalab recorded the adaptation curve."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) for p in value):
        raise _Invalid(f"{where} is {_shown(value)}, not a list of {{step, mean, ci95}}")
    points = []
    for index, point in enumerate(value):
        step = _typed(point, "step", int, "a whole number", f"{where}[{index}].")
        mean = _number(point, "mean", f"{where}[{index}].")
        if step is None or mean is None:
            continue  # a NaN step (a diverged run): no point to draw
        points.append((step, mean, _number(point, "ci95", f"{where}[{index}].")))
    return sorted(points)


def _path(results: dict[str, Any], key: str) -> Path | None:
    value = _typed(results, key, str, "a path")
    return Path(value) if value else None


def _mtime(path: Path) -> float | None:
    try:
        return path.stat().st_mtime
    except OSError:
        return None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, dict) else {}
