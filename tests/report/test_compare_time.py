"""metalab-compare's time to accuracy and cost columns, on run directories laid out as
metalab-train writes them (results.json with train/test/hardware, metrics.csv with
time/cpu_seconds beside val/acc), with curves chosen so every first crossing is known: a
curve that crosses, falls back and crosses again counts its first crossing; a threshold never
reached is reported as such, never as 0; runs logged before time was recorded still load.
A real tiny run checks that the reported seconds are the ones its metrics.csv logged."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from metalab.compare.cli import main
from metalab.compare.load import load_run
from metalab.compare.timing import Threshold, first_reached
from tests.helpers.cli import read_results, train_run

# (step, val/acc, cpu seconds, wall seconds): crosses 90% at step 20, falls back, crosses again
ZIGZAG = [(9, 0.80, 5.0, 6.0), (19, 0.91, 10.5, 12.0), (29, 0.88, 15.25, 18.0),
          (39, 0.93, 20.0, 24.0), (49, 0.955, 25.0, 30.0)]  # fmt: skip
STEADY = [(9, 0.85, 4.0, 4.5), (19, 0.92, 8.0, 9.0), (29, 0.94, 12.0, 13.5)]


def timed_run(root: Path, name: str, algorithm: str, seed: int,
              curve: list[tuple[int, float, float, float]], timed: bool = True,
              gpu: bool = False) -> Path:  # fmt: skip
    """A completed Omniglot run; ``timed=False`` writes it as runs before time logging were."""
    run = root / name
    run.mkdir(parents=True)
    config = {"seed": seed, "algorithm": {"name": algorithm},
              "dataset": {"name": "omniglot", "ways": 5, "shots": 1}}  # fmt: skip
    results: dict = {
        "status": "completed",
        "metrics": {
            "test/acc": {"metric": "acc", "mean": 0.9, "ci95": 0.01, "tasks": 600},
            "val/acc_best": max(v for _, v, _, _ in curve),
        },
        "protocol": {"dataset": "omniglot", "ways": 5, "shots": 1},
        "config": config,
    }
    if timed:
        hardware = {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1,
                    "accelerator": "gpu" if gpu else "cpu", "devices": 1}  # fmt: skip
        if gpu:
            hardware["gpu"] = "Test GPU"
        results |= {"train": {"steps": curve[-1][0] + 1, "cpu_seconds": curve[-1][2] + 1,
                              "wall_seconds": curve[-1][3] + 1},
                    "test": {"cpu_seconds": 7.5, "wall_seconds": 8.0},
                    "hardware": hardware}  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        time_columns = ["time/cpu_seconds", "time/wall_seconds"] if timed else []
        writer.writerow(["epoch", "step", *time_columns, "train/loss", "val/acc"])
        for step, acc, cpu, wall in curve:
            times = [cpu, wall] if timed else []
            writer.writerow([0, step, *["" for _ in times], 1.0, ""])  # a training row
            writer.writerow([0, step, *times, "", acc])
    return run


def rows_of(path: Path, key: str) -> dict[str, dict]:
    with path.open() as handle:
        return {row[key]: row for row in csv.DictReader(handle)}


def runs_of(path: Path) -> dict[tuple[str, str], dict]:
    with path.open() as handle:
        return {(r["group"], r["seed"]): r for r in csv.DictReader(handle)}


@pytest.fixture
def report(tmp_path) -> Path:
    sweep = tmp_path / "sweep"
    timed_run(sweep, "maml_0", "maml", 0, ZIGZAG)
    timed_run(sweep, "maml_1", "maml", 1, STEADY)
    timed_run(sweep, "protonet_0", "protonet", 0, STEADY, gpu=True)
    out = tmp_path / "report"
    assert main([str(sweep), "--out", str(out)]) == 0
    return out


def test_the_first_crossing_counts_and_a_miss_is_not_reached(tmp_path):
    run = load_run(timed_run(tmp_path, "zigzag", "maml", 0, ZIGZAG))
    hit = first_reached(run, Threshold("acc", 0.90))
    # metrics.csv's step 19 is the validation after 20 outer steps (load.validation_step)
    assert (hit.step, hit.cpu_seconds, hit.wall_seconds) == (20, 10.5, 12.0)  # not step 40
    hit = first_reached(run, Threshold("acc", 0.95))
    assert (hit.step, hit.cpu_seconds) == (50, 25.0)
    assert first_reached(run, Threshold("acc", 0.97)) is None
    assert first_reached(run, Threshold("mse", 0.5)) is None  # another metric's threshold
    mse = Threshold("mse", 0.5)
    assert mse.met_by(0.5) and mse.met_by(0.4) and not mse.met_by(0.6)  # at or below


def test_per_run_csv_has_each_runs_first_crossing(report):
    runs = runs_of(report / "time_to_accuracy.csv")
    zigzag, steady = runs[("maml", "0")], runs[("maml", "1")]
    assert zigzag["step_to_acc90"] == "20" and float(zigzag["cpu_seconds_to_acc90"]) == 10.5
    assert float(zigzag["wall_seconds_to_acc90"]) == 12.0
    assert float(zigzag["cpu_seconds_to_acc95"]) == 25.0 and zigzag["reached_acc95"] == "True"
    assert zigzag["reached_acc97"] == "False" and zigzag["cpu_seconds_to_acc97"] == ""
    assert float(steady["cpu_seconds_to_acc90"]) == 8.0 and steady["reached_acc95"] == "False"
    assert float(zigzag["train_cpu_seconds"]) == 26.0 and zigzag["train_steps"] == "50"
    assert zigzag["wall_is_gpu_time"] == "False"
    assert runs[("protonet", "0")]["wall_is_gpu_time"] == "True"
    assert zigzag["path"] == "../sweep/maml_0"  # relative to the report's folder


def test_group_csv_carries_budget_and_mean_time_over_seeds_that_all_reached(report):
    rows = rows_of(report / "comparison.csv", "algorithm.name")
    maml = rows["maml"]
    assert maml["reached_acc90"] == "2/2"
    assert float(maml["cpu_seconds_to_acc90"]) == pytest.approx((10.5 + 8.0) / 2)
    assert float(maml["wall_seconds_to_acc90"]) == pytest.approx((12.0 + 9.0) / 2)
    assert maml["reached_acc95"] == "1/2" and maml["cpu_seconds_to_acc95"] == ""  # no mean
    assert maml["reached_acc97"] == "0/2" and maml["cpu_seconds_to_acc97"] == ""
    assert float(maml["train_cpu_seconds"]) == pytest.approx((26.0 + 13.0) / 2)
    assert float(maml["train_steps"]) == pytest.approx((50 + 30) / 2)
    assert float(maml["test_cpu_seconds"]) == 7.5 and float(maml["test_wall_seconds"]) == 8.0
    assert maml["hardware"] == "Test CPU, 2 cores, 1 torch thread"
    protonet = rows["protonet"]
    assert protonet["wall_is_gpu_time"] == "True" and protonet["hardware"].startswith("Test GPU")
    assert "test_mean" in maml and "published" in maml  # the table's own columns stay


def test_markdown_and_html_show_times_and_not_reached(report):
    markdown = (report / "comparison.md").read_text()
    assert "## Budget and time to accuracy" in markdown
    group = next(line for line in markdown.splitlines()
                 if line.startswith("| maml | 30–50 |"))  # fmt: skip
    assert "9.25 s (wall 10.5 s)" in group  # 90%: mean of 10.5 and 8.0 CPU s
    assert "— (1/2)" in group and group.rstrip(" |").endswith("—")  # 95%: one seed; 97%: none
    assert "step 20: 10.5 s (wall 12 s)" in markdown  # per run, the first crossing
    assert "GPU wall" in markdown  # the GPU run's wall time is said to be the GPU's
    page = (report / "comparison.html").read_text()
    assert "Budget and time to accuracy" in page and "step 20: 10.5 s" in page
    assert page.count('src="data:image/png;base64,') == 3  # with val_vs_cpu_time.png


def test_the_accuracy_vs_cpu_time_plot_is_written(report):
    with Image.open(report / "val_vs_cpu_time.png") as image:
        image.verify()
        assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


def test_thresholds_from_the_cli_in_percent(tmp_path):
    timed_run(tmp_path / "runs", "r0", "maml", 0, ZIGZAG)
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out), "--thresholds", "88,93"]) == 0
    run = next(iter(runs_of(out / "time_to_accuracy.csv").values()))
    assert run["step_to_acc88"] == "20" and run["step_to_acc93"] == "40"
    assert "cpu_seconds_to_acc90" not in run
    assert main([str(tmp_path / "runs"), "--out", str(out), "--thresholds", "x"]) == 2


def test_runs_logged_before_time_columns_load_and_show_nothing(tmp_path):
    timed_run(tmp_path / "runs", "old_maml", "maml", 0, STEADY, timed=False)
    timed_run(tmp_path / "runs", "old_protonet", "protonet", 0, ZIGZAG, timed=False)
    out = tmp_path / "out"
    assert main([str(tmp_path / "runs"), "--out", str(out)]) == 0
    row = rows_of(out / "comparison.csv", "algorithm.name")["maml"]
    assert row["reached_acc90"] == "" and row["cpu_seconds_to_acc90"] == ""
    assert row["train_cpu_seconds"] == "" and row["hardware"] == ""
    run = next(iter(runs_of(out / "time_to_accuracy.csv").values()))
    assert run["reached_acc90"] == "" and run["step_to_acc90"] == ""  # unknown, not "False"
    lines = (out / "comparison.md").read_text().splitlines()
    cells = [line for line in lines if line.startswith(("| maml |", "| protonet |"))]
    assert cells and not any("—" in line for line in cells)  # not "not reached" either
    assert not (out / "val_vs_cpu_time.png").exists()


def test_a_step_validated_again_after_resume_keeps_its_last_time(tmp_path):
    run_dir = timed_run(tmp_path, "resumed", "maml", 0, STEADY)
    with (run_dir / "metrics.csv").open("a", newline="") as handle:  # attempt 2 from step 10
        csv.writer(handle).writerow([0, 19, 9.0, 10.0, "", 0.92])
    run = load_run(run_dir)
    assert run.clock[20] == (9.0, 10.0) and run.clock[10] == (4.0, 4.5)
    assert first_reached(run, Threshold("acc", 0.9)).cpu_seconds == 9.0


@pytest.mark.slow
def test_a_real_runs_times_are_its_metrics_csv_values(tmp_path):
    run_dir = train_run(
        tmp_path,
        "trainer.max_steps=40",
        "trainer.val_check_interval=10",
        "trainer.enable_progress_bar=false",
        "val.tasks=5",
        "eval.tasks=10",
        "strategy=loop",
        "logger=csv",
    )
    with (run_dir / "metrics.csv").open() as handle:
        logged = [(int(r["step"]), float(r["val/mse"]), float(r["time/cpu_seconds"]),
                   float(r["time/wall_seconds"])) for r in csv.DictReader(handle)
                  if r.get("val/mse") and r.get("time/cpu_seconds")]  # fmt: skip
    assert len(logged) == 4
    # reached at the first validation; at the first that gets to the median; never
    middle = sorted(v for _, v, _, _ in logged)[1]
    targets = [max(v for _, v, _, _ in logged) + 1.0, middle, -1.0]
    out = tmp_path / "report"
    argv = ["--out", str(out), "--mse-thresholds", ",".join(map(repr, targets))]
    assert main([str(run_dir), *argv]) == 0
    run = next(iter(runs_of(out / "time_to_accuracy.csv").values()))
    for target in targets[:2]:
        key = Threshold("mse", target).key
        step, _, cpu, wall = next(p for p in logged if p[1] <= target)
        assert int(run[f"step_to_{key}"]) == step + 1  # the outer steps done
        assert float(run[f"cpu_seconds_to_{key}"]) == cpu  # exactly what metrics.csv logged
        assert float(run[f"wall_seconds_to_{key}"]) == wall
    assert run[f"reached_{Threshold('mse', -1.0).key}"] == "False"
    results = read_results(run_dir)
    assert float(run["train_cpu_seconds"]) == results["train"]["cpu_seconds"]
    group = next(iter(rows_of(out / "comparison.csv", "group").values()))
    assert float(group["train_cpu_seconds"]) == results["train"]["cpu_seconds"]
    assert float(group["test_cpu_seconds"]) == results["test"]["cpu_seconds"]
    assert int(float(group["train_steps"])) == results["train"]["steps"] == 40
    assert (out / "val_vs_cpu_time.png").is_file()


def test_a_resumed_run_s_curve_and_clock_include_its_earlier_attempts(tmp_path):
    """resume moves an interrupted attempt's files to attempt-N/; the run's curve is all of
    them, oldest first, and a step validated again keeps the later attempt's row."""
    run = timed_run(tmp_path, "run", "maml", 0, [(29, 0.94, 15.0, 16.0), (39, 0.96, 20.0, 21.0)])
    timed_run(run, "attempt-1", "maml", 0, [(9, 0.80, 5.0, 6.0), (19, 0.91, 10.0, 11.0)])
    timed_run(run, "attempt-2", "maml", 0, [(19, 0.90, 10.2, 11.5), (29, 0.70, 99.0, 99.0)])
    loaded = load_run(run)
    assert loaded.curve == [(10, 0.80), (20, 0.90), (30, 0.94), (40, 0.96)]
    assert loaded.clock[10] == (5.0, 6.0) and loaded.clock[20] == (10.2, 11.5)
    assert loaded.clock[30] == (15.0, 16.0)
    assert first_reached(loaded, Threshold("acc", 0.9)).cpu_seconds == 10.2


def test_an_earlier_attempt_is_part_of_its_run_not_a_run_of_its_own(tmp_path):
    from metalab.compare.discover import find_run_dirs

    run = timed_run(tmp_path / "sweep", "run", "maml", 0, STEADY)
    attempt = timed_run(run, "attempt-1", "maml", 0, ZIGZAG)
    results = json.loads((attempt / "results.json").read_text())
    (attempt / "results.json").write_text(json.dumps(results | {"status": "interrupted"}))
    assert find_run_dirs([tmp_path / "sweep"]) == [run.resolve()]
    assert find_run_dirs([run]) == [run.resolve()]
