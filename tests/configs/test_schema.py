"""Every number and flag of the composed config has a type and a range (issue 18): a string, a
list, a float where an integer is due, zero, a negative and a huge value given to any of them
stop the job with one ``metalab: error:`` line before a completed run in the target directory
is touched; a refused value is named with its key.

The hostile values (six for each of some 80 keys) are each applied to the composition of
their key's base config, which is composed once per base (``with_values``): Hydra composes
the defaults, then applies ``key=value`` overrides to the result, and that second step is
run here by Hydra's own code on a copy of the first.
``test_values_on_a_shared_composition_equal_a_full_composition`` checks the two agree."""

from __future__ import annotations

import functools
import pickle
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra._internal.config_loader_impl import ConfigLoaderImpl, get_overrides_dirname
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from metalab.algorithms import algorithm_class
from metalab.paths import config_dir
from metalab.run_status import RunGuard
from metalab.schema import EVAL, TRAIN, numeric_keys
from tests.helpers.fake_runs import completed_run, snapshot

PRESETS = sorted(p.stem for p in (Path(config_dir()) / "experiment").glob("*.yaml"))
ALGORITHMS = sorted(p.stem for p in (Path(config_dir()) / "algorithm").glob("*.yaml"))


def compose_with(config_name: str, *overrides: str, hydra: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir(), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=hydra)


def test_every_number_and_flag_of_every_preset_has_a_spec():
    seen: set[str] = set()
    for overrides in (
        [[]] + [[f"experiment={p}"] for p in PRESETS] + [[f"algorithm={a}"] for a in ALGORITHMS]
    ):
        seen |= set(numeric_keys(compose_with("train", *overrides)))
    seen_eval = set(numeric_keys(compose_with("eval", "ckpt_path=x.ckpt")))
    assert len(seen) > 50
    assert sorted(seen - set(TRAIN)) == []
    assert sorted(seen_eval - set(EVAL)) == []


_GROUPS = {p.name for p in Path(config_dir()).iterdir() if p.is_dir()}


@functools.cache
def _composed(config_name: str, base: tuple[str, ...]) -> bytes:
    """The composition, pickled: unpickling a copy is a third of a deepcopy's time."""
    return pickle.dumps(compose_with(config_name, *base, hydra=True))


def with_values(config_name: str, base: list[str], *values: str) -> DictConfig:
    """``compose_with(config_name, *base, *values, hydra=True)`` for ``key=value`` overrides
    (no group choices) without composing ``base`` again: a copy of its composition, with the
    values applied and recorded as Hydra's ConfigLoaderImpl does it after the defaults."""
    cfg = pickle.loads(_composed(config_name, tuple(base)))
    parser = OverridesParser.create()
    added = parser.parse_overrides(list(values))
    assert not any(o.is_sweep_override() or o.key_or_group in _GROUPS for o in added), values
    ConfigLoaderImpl._apply_overrides_to_config(added, cfg)
    for override in added:
        overrides = cfg.hydra.overrides
        (overrides.hydra if override.is_hydra_override() else overrides.task).append(
            override.input_line
        )
    settings = cfg.hydra.job.config.override_dirname
    cfg.hydra.job.override_dirname = get_overrides_dirname(
        overrides=[
            o for o in parser.parse_overrides([*base, *values]) if not o.is_hydra_override()
        ],
        kv_sep=settings.kv_sep,
        item_sep=settings.item_sep,
        exclude_keys=settings.exclude_keys,
    )
    return cfg


def _value(cfg: DictConfig, key: str):
    node = cfg
    for part in key.split("."):
        node = node[part]
    return node


def bases() -> list[list[str]]:
    """The base overrides the numbers and flags are found (and tried) under."""
    found = [[]] + [
        [f"algorithm={a}", "dataset=omniglot", "model=conv4"]
        if "classification" in algorithm_class(a).task_kinds
        else [f"experiment={a}_navigation2d"]  # MAML-RL: its own task family
        for a in ALGORITHMS
    ]
    return [*found, ["dataset=omniglot", "model=conv4", "dataset.augment=koch"]]


@functools.cache
def numeric_defaults() -> list[tuple[str, str, list[str]]]:
    """(key, kind, base overrides under which the key exists) for every number and flag."""
    found: dict[str, tuple[str, list[str]]] = {}
    for base in bases():
        cfg = compose_with("train", *base)
        for key in numeric_keys(cfg):
            value = _value(cfg, key)
            kind = "bool" if isinstance(value, bool) else type(value).__name__
            found.setdefault(key, (kind, base))
    return [(key, kind, base) for key, (kind, base) in sorted(found.items())]


HOSTILE = {
    "a string": "abc",
    "a list": "[1,2]",
    "a float for an int": "2.5",
    "zero": "0",
    "a negative": "-3",
    "a huge value": "1000000000000000",
}


@pytest.mark.parametrize(("key", "kind", "base"), numeric_defaults(), ids=lambda v: str(v))
def test_a_hostile_value_for_any_number_stops_before_a_completed_run_is_touched(
    key, kind, base, tmp_path
):
    run_dir = tmp_path / "done"
    before = completed_run(run_dir)
    for what, text in HOSTILE.items():
        cfg = with_values("train", base, f"{key}={text}", f"hydra.run.dir={run_dir}")
        with pytest.raises(SystemExit) as stop:
            RunGuard().on_run_start(cfg)
        message = str(stop.value.code)
        assert message.startswith("metalab: error: ") and "\n" not in message, (what, message)
        must_name_key = (
            what in ("a string", "a list")
            or (what == "a float for an int" and kind == "int")
            or (kind == "bool")
        )
        if must_name_key:
            assert f"{key}=" in message, (what, message)
        else:  # refused for its value, or (a valid value) by the guard of the completed run
            assert f"{key}=" in message or "already holds a completed run" in message, message
        assert snapshot(run_dir) == before, what


def test_values_on_a_shared_composition_equal_a_full_composition(tmp_path):
    """with_values is what Hydra composes: for every base, a hostile value of one of its keys
    (each kind of hostile value in turn) and the run directory give the same config, hydra
    node included, either way."""
    keys = {tuple(base): key for key, _, base in reversed(numeric_defaults())}
    texts = list(HOSTILE.values())
    for number, base in enumerate(bases()):
        key = keys.get(tuple(base), "seed")  # a key first found under this base, else any
        values = [f"{key}={texts[number % len(texts)]}", f"hydra.run.dir={tmp_path}"]
        full = compose_with("train", *base, *values, hydra=True)
        shared = with_values("train", base, *values)
        assert OmegaConf.to_container(shared) == OmegaConf.to_container(full), (base, values)
        assert OmegaConf.is_struct(shared) and not OmegaConf.is_readonly(shared.hydra)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("seed=1.5", "seed=1.5: it is not a whole number"),
        ("algorithm.meta_batch=2.5", "algorithm.meta_batch=2.5: it is not a whole number"),
        ("val.tasks=1000000000", "val.tasks=1000000000: expected an integer >= 1 and <= 1000000"),
        ("trainer.max_time=abc", "trainer.max_time='abc': it is not a duration"),
        ("run_name=" + "a" * 300, "it is not one folder name"),
        ("trainer.devices=0", "trainer.devices=0: expected an integer >= 1"),
    ],
)
def test_silent_truncation_and_unbounded_values_are_refused(override, named, tmp_path):
    cfg = compose_with("train", override, f"hydra.run.dir={tmp_path / 'new'}", hydra=True)
    with pytest.raises(SystemExit) as stop:
        RunGuard().on_run_start(cfg)
    assert named in str(stop.value.code)
    assert not (tmp_path / "new").exists()


def test_a_meta_batch_that_cannot_fit_in_memory_is_refused_with_the_estimate(tmp_path):
    cfg = compose_with(
        "train",
        "dataset=omniglot",
        "model=conv4",
        "algorithm.meta_batch=1000000000",
        f"hydra.run.dir={tmp_path / 'new'}",
        hydra=True,
    )
    with pytest.raises(SystemExit) as stop:
        RunGuard().on_run_start(cfg)
    message = str(stop.value.code)
    # 5 ways x (1 + 15) images of 28 x 28 float32 = 250 KiB per episode
    assert "algorithm.meta_batch=1000000000: one batch of 1000000000 episodes" in message
    assert "(245.0 KiB per episode)" in message and "lower algorithm.meta_batch" in message


def test_a_model_too_large_for_the_machine_is_measured_not_built(tmp_path):
    cfg = compose_with(
        "train",
        "dataset=omniglot",
        "model=conv4",
        "model.channels=100000000",
        f"hydra.run.dir={tmp_path / 'new'}",
        hydra=True,
    )
    with pytest.raises(SystemExit) as stop:
        RunGuard().on_run_start(cfg)
    assert "parameters, needing at least" in str(stop.value.code)
