"""The quick subset of benchmarks/hostile_inputs.py (issue 18's catalogue of hostile inputs):
none of its cases may end in a traceback or a wrong outcome (a completed run changed, exit 0
for an input that cannot work), and its control must succeed. The whole catalogue takes
~15 minutes and is run by hand; this keeps its representative cases from regressing."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

import pytest

from tests.helpers.paths import BENCHMARKS

SCRIPT = BENCHMARKS / "hostile_inputs.py"


def load_script() -> ModuleType:
    """The benchmark script as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("hostile_inputs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_quick_hostile_inputs_get_no_traceback_and_no_wrong_outcome():
    hostile = load_script()
    cases = hostile.select(hostile.catalogue(), quick=True, only=None)
    assert 5 <= len(cases) <= 10
    rows = hostile.run_catalogue(cases, keep=False, progress=False)
    report = "\n".join(
        f"{r.case}: {r.outcome} {r.note}\n  {r.command}\n  " + "\n  ".join(r.stderr_tail)
        for r in rows
        if r.outcome not in (hostile.CLEAR, hostile.SKIPPED, hostile.OK)
    )
    bad = [r for r in rows if r.outcome in (hostile.TRACEBACK, hostile.WRONG, hostile.FAILED)]
    assert not bad, report
    assert any(r.control for r in rows)


def test_the_catalogue_covers_every_kind_of_input_of_the_issue():
    """Items 1-9 of issue 18, each by at least one case (names, not runs: this is instant)."""
    hostile = load_script()
    names = [n for c in hostile.catalogue() for n in (c.names or (c.name,))]
    assert len(names) >= 100
    for needle in (
        "optimizer.lr: a string",  # 1: a wrong type aimed at a completed run
        "trainer=ddp_cpu trainer.devices=0",
        "eval into the completed run's dir",  # 2
        "eval into an earlier evaluation's dir",
        "live run: the same command again",  # 3
        "Ctrl+C 2x",  # 4
        "Ctrl+C 3x",
        "eval damaged ckpt",  # 5
        "algorithm.meta_batch=1e9",  # 6
        "val.tasks=1e9",
        "seed=1.5",  # 7
        "resume=true into a folder of the user's files",  # 8
        "resume=/nonexistent.ckpt",  # 9
        "resume=maybe",
        "eval without ckpt_path",
        "eval ckpt_path=<a folder>",
        "dataset.root unreadable",
        "truncated images_background.zip",
        "read-only output folder",
        "disk full",
        "run_name of 300 characters",
        "compare: results.json is a JSON list",
        'compare: results.json with "mean": "abc"',
        "compare --out naming an existing file",
    ):
        assert any(needle in name for name in names), needle
    assert len(set(names)) == len(names)
