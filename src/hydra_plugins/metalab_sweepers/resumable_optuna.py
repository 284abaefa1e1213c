"""Optuna's Hydra sweeper, made to resume: a study reloaded from its storage runs only the
trials still missing, instead of ``n_trials`` more.

hydra-optuna-sweeper already reloads an existing study (``load_if_exists``), but always
asks for ``n_trials`` new trials, numbers its jobs from 0 again (so job directories of the
first attempt could be reused) and leaves a trial that was running when the sweep was
killed in the RUNNING state forever. This subclass fixes those three things and creates the
SQLite file's directory (the sweep directory does not exist yet when the study is opened).

It lives in ``hydra_plugins`` because Hydra instantiates sweepers only from there; without
the ``metalab[sweep]`` extra the module defines nothing, so Hydra's plugin scan stays quiet.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

try:  # light: the Optuna sweeper's plugin module imports optuna only when a sweep starts
    from hydra_plugins.hydra_optuna_sweeper.optuna_sweeper import OptunaSweeper
except ImportError:  # hydra-optuna-sweeper is the optional metalab[sweep] extra
    OptunaSweeper = None

log = logging.getLogger(__name__)


def sqlite_file(storage: Any) -> Path | None:
    if isinstance(storage, str) and storage.startswith("sqlite:///"):
        return Path(storage[len("sqlite:///") :])
    return None


def _resuming(impl: Any) -> Any:
    """``impl`` (an ``OptunaSweeperImpl``) turned into one that resumes its study. Defined
    here, not at import, because importing optuna takes seconds and Hydra imports every
    plugin module for ``--help`` and ``--cfg`` too."""
    import optuna
    from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl
    from optuna.trial import TrialState

    class _ResumingImpl(OptunaSweeperImpl):
        def sweep(self, arguments: list[str]) -> None:
            db = sqlite_file(self.storage)
            if db is not None:
                db.parent.mkdir(parents=True, exist_ok=True)
            if self.storage is not None and self.study_name is not None:
                self._continue_study()
            return super().sweep(arguments)

        def _continue_study(self) -> None:
            names = [s.study_name for s in optuna.get_all_study_summaries(self.storage)]
            if self.study_name not in names:
                return
            study = optuna.load_study(study_name=self.study_name, storage=self.storage)
            trials = study.get_trials(deepcopy=False)
            for trial in trials:
                if trial.state == TrialState.RUNNING:  # its sweep was interrupted
                    study._storage.set_trial_state(trial._trial_id, TrialState.FAIL)
            done = sum(t.state == TrialState.COMPLETE for t in trials)
            self.job_idx = len(trials)
            self.n_trials = max(0, self.n_trials - done)
            log.info(
                "Optuna study %r resumed from %s: %d trials complete, %d to run",
                self.study_name,
                self.storage,
                done,
                self.n_trials,
            )

    resuming = _ResumingImpl.__new__(_ResumingImpl)
    resuming.__dict__.update(impl.__dict__)
    return resuming


if OptunaSweeper is not None:

    class ResumableOptunaSweeper(OptunaSweeper):
        """Drop-in for hydra-optuna-sweeper's ``OptunaSweeper`` (same config keys)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.sweeper = _resuming(self.sweeper)
