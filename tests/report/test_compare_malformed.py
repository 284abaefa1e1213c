"""metalab-compare on malformed input (issue 18, item 9): a results.json that is not JSON,
a JSON list, a summary or time that is not a number, or a metrics.csv value that is not a
number is skipped with one warning line naming the file; --out naming a file is refused in
one line. Nothing of this may end in a traceback."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from metalab.compare.cli import main
from tests.helpers.fake_runs import omniglot_run


def _as_list(results: dict) -> object:
    return [results]


def _mean_abc(results: dict) -> object:
    results["metrics"]["test/acc"]["mean"] = "abc"
    return results


def _summary_a_number(results: dict) -> object:
    results["metrics"]["test/acc"] = 0.9
    return results


def _train_seconds_abc(results: dict) -> object:
    results["train"] = {"steps": 10, "cpu_seconds": "abc"}
    return results


MALFORMED = {
    "a JSON list": (_as_list, "holds a list, not the JSON object metalab writes"),
    "mean abc": (_mean_abc, "metrics.test/acc.mean is 'abc', not a number"),
    "summary a number": (_summary_a_number, "metrics.test/acc is 0.9, not an object with"),
    "train seconds abc": (_train_seconds_abc, "train.cpu_seconds is 'abc', not a number"),
}


def two_good_runs_and(tmp_path: Path, name: str) -> Path:
    """Two completed runs and a third, ``name``, for the test to damage."""
    omniglot_run(tmp_path / "runs", "good_0", "maml", 0, 0.95)
    omniglot_run(tmp_path / "runs", "good_1", "maml", 1, 0.96)
    return omniglot_run(tmp_path / "runs", name, "maml", 2, 0.50) / "results.json"


def compared_seeds(out: Path) -> set[str]:
    with (out / "runs.csv").open() as handle:
        return {row["seed"] for row in csv.DictReader(handle)}


@pytest.mark.parametrize("damage", MALFORMED, ids=list(MALFORMED))
def test_a_malformed_results_json_is_skipped_with_one_warning_naming_it(tmp_path, capsys, damage):
    bad = two_good_runs_and(tmp_path, "bad")
    rewrite, what = MALFORMED[damage]
    bad.write_text(json.dumps(rewrite(json.loads(bad.read_text()))))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    out, err = capsys.readouterr()
    (warning,) = err.splitlines()
    assert warning.startswith(f"metalab: warning: skipped {bad.resolve()}: {what}"), warning
    assert compared_seeds(tmp_path / "out") == {"0", "1"}  # the others are compared
    assert "1 malformed skipped" in " ".join(out.split())


def test_results_json_that_is_not_json_or_a_curve_that_is_not_numbers_is_skipped(tmp_path, capsys):
    bad = two_good_runs_and(tmp_path, "bad")
    bad.write_text('{"status": "completed", "metrics": ')  # cut off mid-write
    curve = omniglot_run(tmp_path / "runs", "bad_curve", "maml", 3, 0.9) / "metrics.csv"
    curve.write_text("epoch,step,val/acc\n0,9,abc\n")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    warnings = capsys.readouterr().err.splitlines()
    assert warnings == [
        f"metalab: warning: skipped {bad.resolve()}: not JSON (Expecting value: line 1 "
        "column 36 (char 35)); repair or remove it.",
        f"metalab: warning: skipped {curve.resolve()}: val/acc='abc' is not a number; repair "
        "or remove it.",
    ]
    assert compared_seeds(tmp_path / "out") == {"0", "1"}


def test_a_metrics_csv_that_is_not_metalabs_is_skipped_not_read_as_empty(tmp_path, capsys):
    two_good_runs_and(tmp_path, "fine")
    garbage = omniglot_run(tmp_path / "runs", "garbage", "maml", 3, 0.9) / "metrics.csv"
    garbage.write_text("\x00\x01garbage,\n1,2,3,4\n")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    (warning,) = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"metalab: warning: skipped {garbage.resolve()}: its header has ")
    assert compared_seeds(tmp_path / "out") == {"0", "1", "2"}


def test_when_no_run_can_be_read_compare_fails_in_one_line(tmp_path, capsys):
    bad = omniglot_run(tmp_path / "runs", "bad", "maml", 0, 0.9) / "results.json"
    bad.write_text("[]")
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 2
    warning, error = capsys.readouterr().err.splitlines()
    assert warning.startswith(f"metalab: warning: skipped {bad.resolve()}: holds a list")
    assert error == (
        "metalab: error: none of the 1 results.json found can be read (see the warnings "
        "above): repair them, or point metalab-compare at other runs."
    )
    assert not (tmp_path / "out").exists()


def test_out_naming_a_file_is_refused_and_the_file_kept(tmp_path, capsys):
    omniglot_run(tmp_path / "runs", "good", "maml", 0, 0.95)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert main([str(tmp_path / "runs"), "--out", str(notes)]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"metalab: error: --out {notes} is a file, and --out must be a folder (created if "
        "missing): name a new or existing folder, e.g. --out comparison."
    ]
    assert notes.read_text() == "mine"
    assert main([str(tmp_path / "runs"), "--out", str(notes / "report")]) == 2
    (error,) = capsys.readouterr().err.splitlines()
    assert error.startswith(f"metalab: error: --out {notes / 'report'} cannot be created (")
