"""Every job's ``results.json`` status, and the run/sweep directories that are never overwritten.

A job ends ``completed``, ``failed`` (with the error) or ``interrupted`` (with the signal and
the checkpoint written); a killed job leaves no results.json. ``RunGuard`` is a Hydra
callback: it runs before Hydra writes ``.hydra/`` into a directory, so an existing run or
sweep is refused unless it is resumed. ``resume``:

- ``auto`` (default): a directory whose unfinished job left a checkpoint (a crash, SIGKILL,
  a pre-emption) is resumed from it, and one killed before its first checkpoint starts again
  when the same command (the same overrides) runs it; any other existing run or sweep is
  refused;
- ``true``: completed jobs are kept, every other job runs again (from its checkpoint if it
  has one, from scratch if it failed);
- ``false``: an existing run or sweep is always refused;
- a checkpoint path: a new run that continues from that checkpoint.

Files of an earlier attempt are moved to ``attempt-N/``, never deleted. At the end of a sweep
RunGuard lists the jobs that did not complete and exits non-zero.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from metalab import run_lock
from metalab.distributed import launched_rank
from metalab.errors import ConfigError
from metalab.results import write_json

log = logging.getLogger("metalab")

COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"
RESULTS = "results.json"
KEPT_HYDRA = ".hydra-kept"
WANDB_RUN_ID = "wandb_run_id"  # metalab.loggers.RUN_ID_FILE, where the merged branch has it


def read_status(run_dir: Path) -> str | None:
    """The status a job's results.json records; None if it has none (never finished)."""
    try:
        return json.loads((run_dir / RESULTS).read_text()).get("status")
    except (OSError, ValueError):
        return None


def write_outcome(run_dir: Path, status: str, **fields: Any) -> Path:
    """results.json of a job that did not complete: the status and why, and what it kept."""
    path = run_dir / RESULTS
    write_json(path, {"status": status, **fields, "run_dir": str(run_dir)})
    return path


# What a metalab job leaves in its directory; a folder with none of these never held one.
RUN_MARKERS = (".hydra", RESULTS, "checkpoints", "metrics.csv", "train.log", "evaluate.log")


def _entries(run_dir: Path) -> list[Path]:
    """What a directory holds, without the lock of the process that runs in it."""
    return [p for p in run_dir.iterdir() if p.name != run_lock.LOCK_NAME]


def holds_a_run(run_dir: Path) -> bool:
    return run_dir.is_dir() and bool(_entries(run_dir))


def refuse_foreign_files(run_dir: Path, sweep: bool = False) -> None:
    """A folder that holds files but never held a metalab job (``hydra.run.dir=.``, a data
    folder) is refused in every resume mode: moving its files to attempt-N/ is not ours to do.
    A sweep's folder holds jobs and ``multirun*.yaml``."""
    if not holds_a_run(run_dir):
        return
    if any((run_dir / marker).exists() for marker in RUN_MARKERS) or any(
        p.name.startswith("attempt-") for p in _entries(run_dir)
    ):
        return
    if sweep and (job_dirs(run_dir) or any(run_dir.glob("multirun*.yaml"))):
        return
    names = sorted(p.name for p in _entries(run_dir))
    shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
    raise ConfigError(
        f"{run_dir} holds files that are not a metalab run ({shown}): choose a new or empty "
        "hydra.run.dir (or leave it at its default)."
    )


def move_aside(run_dir: Path) -> Path:
    """Move everything of an earlier attempt into ``attempt-N/`` (N = 1, 2, ...)."""
    number = 1
    while (run_dir / f"attempt-{number}").exists():
        number += 1
    target = run_dir / f"attempt-{number}"
    entries = [p for p in _entries(run_dir) if not p.name.startswith("attempt-")]
    target.mkdir()
    for entry in entries:
        shutil.move(str(entry), str(target / entry.name))
    if (target / WANDB_RUN_ID).is_file():  # the re-run continues the job's W&B run
        shutil.copy2(target / WANDB_RUN_ID, run_dir / WANDB_RUN_ID)
    return target


def resume_mode(value: Any) -> str:
    """``resume`` as one of "auto", "true", "false" or "path" (a checkpoint to continue)."""
    if isinstance(value, bool) or value is None:
        return "true" if value else "false"
    text = str(value).strip()
    if text.lower() in ("auto", "true", "false"):
        return text.lower()
    if not text.endswith(".ckpt"):
        raise ConfigError(
            f"resume={value!r} is neither auto, true, false nor a checkpoint (.ckpt) path: "
            "use one of those (e.g. resume=outputs/runs/.../checkpoints/last.ckpt)."
        )
    if not Path(text).is_file():
        raise ConfigError(
            f"resume={text}: no such checkpoint file. Give the path of a last.ckpt, best.ckpt "
            "or interrupted.ckpt of an earlier run."
        )
    return "path"


def resumable_checkpoint(run_dir: Path) -> Path | None:
    """The checkpoint an unfinished (interrupted or killed) job left, to continue from."""
    if read_status(run_dir) not in (None, INTERRUPTED):
        return None
    for name in ("interrupted.ckpt", "last.ckpt"):
        if (run_dir / "checkpoints" / name).is_file():
            return run_dir / "checkpoints" / name
    return None


def _command(overrides: Any) -> list[str]:
    """A job's command-line overrides, without ``resume`` (how to treat the folder, not what
    the job computes)."""
    return [str(o) for o in overrides or () if not str(o).lstrip("+~").startswith("resume=")]


def earlier_overrides(folder: Path, sweep: bool = False) -> list[str] | None:
    """The overrides an earlier run (``.hydra/overrides.yaml``) or sweep (``multirun.yaml``)
    in ``folder`` was started with; None where they cannot be read."""
    try:
        if sweep:
            return _command(OmegaConf.load(folder / "multirun.yaml").hydra.overrides.task)
        return _command(OmegaConf.load(folder / ".hydra" / "overrides.yaml"))
    except Exception:  # noqa: BLE001 - missing or unreadable: not known to be the same command
        return None


def killed_before_first_checkpoint(job: Path) -> bool:
    """A job that was killed (no results.json) or interrupted before it wrote a checkpoint:
    nothing to continue from, and nothing lost by starting it again (its files move to
    attempt-N/)."""
    return read_status(job) in (None, INTERRUPTED) and resumable_checkpoint(job) is None


def prepare_run_dir(run_dir: Path, resume: Any, overrides: Any = None) -> None:
    """A single run's directory: new, or an earlier attempt that did not complete, resumed.
    ``overrides``: this command's, to recognise the same job killed before a checkpoint."""
    if not holds_a_run(run_dir):
        return
    refuse_foreign_files(run_dir)
    status = read_status(run_dir)
    mode = resume_mode(resume)
    what = f"a {status} run" if status else "files of an earlier run"
    if mode == "auto":
        earlier = earlier_overrides(run_dir)
        if status != COMPLETED and resumable_checkpoint(run_dir) is not None:
            log.info("resume=auto: %s holds an unfinished run with a checkpoint", run_dir)
            mode = "true"
        elif killed_before_first_checkpoint(run_dir) and earlier == _command(overrides):
            log.info("resume=auto: %s holds this run, stopped before its first checkpoint: "
                     "starting it again", run_dir)  # fmt: skip
            mode = "true"
        else:
            mode = "false"
            if killed_before_first_checkpoint(run_dir) and earlier is not None:
                what = (
                    "a run stopped before its first checkpoint that was started with other "
                    f"overrides ({' '.join(earlier) or 'none'}; now: "
                    f"{' '.join(_command(overrides)) or 'none'})"
                )
    if mode == "false":
        raise ConfigError(
            f"{run_dir} already holds {what} and metalab never overwrites one: choose a new "
            "hydra.run.dir (or leave it at its default), or add resume=true to run it again "
            "with the earlier files moved to attempt-N/."
        )
    if status == COMPLETED:
        raise ConfigError(
            f"{run_dir} already holds a completed run, so resume=true has nothing to do: "
            "choose a new hydra.run.dir to train again."
        )
    log.info("resume=true: moved the earlier attempt to %s", move_aside(run_dir))


def job_dirs(sweep_dir: Path) -> list[Path]:
    """The job directories of a sweep (Hydra writes .hydra/ into each)."""
    if not sweep_dir.is_dir():
        return []
    return sorted(
        p for p in sweep_dir.iterdir() if (p / ".hydra").is_dir() or (p / RESULTS).is_file()
    )


# Below this much free space a run would fail at its first checkpoint or log line.
MIN_FREE_MIB = 64


def check_free_space(folder: Path) -> None:
    """A disk that is (nearly) full is refused before Hydra writes into it."""
    try:
        usage = shutil.disk_usage(folder)
    except OSError:
        return
    if usage.free < MIN_FREE_MIB * 2**20:
        raise ConfigError(
            f"{folder} is on a disk with {usage.free / 2**20:.1f} MiB free (under "
            f"{MIN_FREE_MIB} MiB): free some space, or choose a hydra.run.dir / "
            "hydra.sweep.dir on another disk."
        )


def prepare_sweep_dir(sweep_dir: Path, resume: Any, overrides: Any = None) -> None:
    if (sweep_dir / RESULTS).is_file() or (sweep_dir / ".hydra").is_dir():
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} holds a single run (its results.json or .hydra/), "
            "not a sweep, and metalab never writes into a run: choose a new hydra.sweep.dir "
            "(or leave it at its default)."
        )
    refuse_foreign_files(sweep_dir, sweep=True)
    jobs = job_dirs(sweep_dir)
    if not jobs:
        return
    mode = resume_mode(resume)
    if mode == "auto":  # only a sweep with a job to continue, or this sweep cut off early
        same = earlier_overrides(sweep_dir, sweep=True) == _command(overrides)
        cut_off = same and any(killed_before_first_checkpoint(job) for job in jobs)
        mode = "true" if cut_off or any(resumable_checkpoint(job) for job in jobs) else "false"
    if mode == "path":
        raise ConfigError(
            "resume=<checkpoint> continues one run, not a sweep: use resume=true (or auto) "
            f"with hydra.sweep.dir={sweep_dir}."
        )
    if mode == "false":
        raise ConfigError(
            f"hydra.sweep.dir={sweep_dir} already holds a sweep of {len(jobs)} jobs and metalab "
            "never overwrites one: add resume=true to finish it (completed jobs are skipped), "
            "or choose a new hydra.sweep.dir."
        )
    for job in jobs:
        if read_status(job) == COMPLETED:
            # Hydra rewrites .hydra/ of every job it launches; keep the original to restore.
            if (job / ".hydra").is_dir() and not (job / KEPT_HYDRA).exists():
                shutil.copytree(job / ".hydra", job / KEPT_HYDRA)
        else:
            log.info("resume=true: re-running %s (earlier files in %s)", job.name, move_aside(job))
    if (sweep_dir / "multirun.yaml").is_file():
        number = 1
        while (sweep_dir / f"multirun.attempt-{number}.yaml").exists():
            number += 1
        shutil.copy2(sweep_dir / "multirun.yaml", sweep_dir / f"multirun.attempt-{number}.yaml")


def restore_kept_hydra(job: Path) -> None:
    """A skipped completed job gets its original .hydra/ back, byte for byte."""
    kept = job / KEPT_HYDRA
    if kept.is_dir():
        shutil.rmtree(job / ".hydra", ignore_errors=True)
        kept.rename(job / ".hydra")


def sweep_summary(sweep_dir: Path) -> tuple[int, list[str]]:
    """How many jobs the sweep has, and one line per job that did not complete."""
    jobs = job_dirs(sweep_dir)
    problems = []
    for job in jobs:
        status = read_status(job)
        if status == COMPLETED:
            continue
        error = ""
        if status is not None:
            error = json.loads((job / RESULTS).read_text()).get("error", "")
        problems.append(
            f"{job.name}: {status or 'no results.json'}{f' ({error})' if error else ''}"
        )
    return len(jobs), problems


def guard_run_dir(run_dir: Path) -> None:
    """A run directory that already holds a run's results is never written into again."""
    for name in ("results.json", "checkpoints"):
        if (run_dir / name).exists():
            raise ConfigError(
                f"{run_dir} already holds a run ({name} exists) and metalab never overwrites one: "
                "choose a new hydra.run.dir or leave it at its default."
            )


class RunGuard(Callback):
    """Hydra callback: guard run/sweep directories before Hydra writes into them, and report
    a sweep's failed jobs at its end with a non-zero exit code."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Nothing gets past this point unchecked: any error of the checks (a value of the
        wrong type raises TypeError or ValueError in them) stops the job before Hydra writes
        into the directory, which would otherwise be a callback warning and a job that goes on
        into a completed run's files."""
        from metalab.preflight import check_config
        from metalab.schema import EVAL, check_values

        # metalab-eval: its own directory, never resumed (``in`` is False for a missing ???)
        evaluation = "ckpt_path" in config.keys()  # noqa: SIM118
        try:
            if evaluation:
                from metalab.evaluate import check_ckpt_path

                check_ckpt_path(config)
                check_values(config, EVAL)
            else:
                check_config(config)
                resume_mode(config.get("resume", "auto"))
            if launched_rank() > 0:
                return  # a DDP process Lightning started: rank 0 prepared the directory
            run_dir = Path(config.hydra.run.dir)
            run_lock.acquire(run_dir)  # before anything looks at (or moves) the run's files
            check_free_space(run_dir)
            try:
                resume = "false" if evaluation else config.get("resume", "auto")
                prepare_run_dir(run_dir, resume, config.hydra.overrides.task)
            except BaseException:
                run_lock.release(run_dir)
                raise
        except ConfigError as error:
            raise SystemExit(f"metalab: error: {error}") from None
        except OSError as error:  # the run directory cannot be made or written
            raise SystemExit(
                f"metalab: error: hydra.run.dir={config.hydra.run.dir} cannot be used "
                f"({error.strerror}: {error.filename}): choose a folder that can be created "
                "and written. Nothing was written."
            ) from None
        except Exception as error:  # noqa: BLE001 - the guard must hold for every error
            raise SystemExit(
                f"metalab: error: the config could not be checked ({type(error).__name__}: "
                f"{error}): a value on the command line probably has the wrong type (a number "
                "is due where text or a list was given); fix it and run again. Nothing was "
                "written."
            ) from None

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        run_lock.release(Path(config.hydra.run.dir))

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            run_lock.acquire(sweep_dir)  # one sweep process per sweep directory
            check_free_space(sweep_dir)
            if "optuna" in str(config.hydra.sweeper.get("_target_", "")).lower():
                return  # an Optuna study resumes from its own storage (its trials are new jobs)
            prepare_sweep_dir(sweep_dir, config.get("resume", "auto"), config.hydra.overrides.task)
        except (ConfigError, OSError) as error:
            run_lock.release(sweep_dir)
            raise SystemExit(f"metalab: error: {error}") from None

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        """A sweep's job holds its own directory too: its launcher may run it in a process of
        its own, and a single run pointed at a live job's folder must be refused."""
        if launched_rank() > 0 or config.hydra.mode != RunMode.MULTIRUN:
            return
        try:
            run_lock.acquire(Path(config.hydra.runtime.output_dir))
        except ConfigError as error:
            raise SystemExit(f"metalab: error: {error}") from None

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        job_dir = Path(config.hydra.runtime.output_dir)
        restore_kept_hydra(job_dir)
        if config.hydra.mode == RunMode.MULTIRUN:
            run_lock.release(job_dir)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        run_lock.release(sweep_dir)
        total, problems = sweep_summary(sweep_dir)
        if not problems:
            log.info("all %d jobs of %s completed", total, sweep_dir)
            return
        lines = "\n  ".join(problems)
        message = (
            f"{len(problems)} of {total} jobs did not complete:\n  {lines}\n"
            f"fix the cause and re-run the same command with resume=true "
            f"hydra.sweep.dir={sweep_dir} to run only these jobs again."
        )
        print(f"metalab: error: {message}", file=sys.stderr)
        raise SystemExit(1)
