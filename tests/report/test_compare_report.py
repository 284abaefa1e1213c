"""metalab-compare's report as a reader sees it (issue 20): readable group labels, a header
with the setting, budget, date and commit, paths relative to the report, the test-time
adaptation curve, per-run steps and seconds, axes that do not mislead (bars on their ticks,
legend swatches in the bars' colours, accuracy from 0 to 100%, validations at the step they
followed), and a metalab-eval of a run's checkpoint shown under that run instead of counted
as a second seed. Synthetic run folders laid out as metalab-train and metalab-eval write
them, plus one real tiny run and its evaluation; the page is rendered in headless Chromium."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from PIL import Image

from metalab.compare.cli import main
from metalab.compare.groups import group_runs
from metalab.compare.load import load_run
from metalab.compare.plots import (
    figure_adaptation_curves,
    figure_test_vs_published,
    figure_validation_curves,
    palette,
)
from metalab.compare.rows import build_rows
from tests.helpers.cli import read_results, run_cli, train_run

COMMIT = "0123456789abcdef0123456789abcdef01234567"
# test accuracy after each inner step at test time, per seed (the last is the test result)
CURVES = {
    "maml": [[0.20, 0.80, 0.90, 0.92], [0.21, 0.82, 0.91, 0.94], [0.19, 0.79, 0.89, 0.90]],
    "fomaml": [[0.20, 0.30, 0.34, 0.35], [0.20, 0.31, 0.35, 0.37], [0.20, 0.29, 0.33, 0.33]],
    "protonet": [[0.97], [0.98]],  # a metric method: one score, no inner steps
}
VALIDATED = [9, 19, 29]  # metrics.csv steps of the validations (after 10, 20, 30 steps)


def per_step(values: list[float], ci: float = 0.02) -> list[dict]:
    return [{"step": s, "mean": v, "ci95": ci} for s, v in enumerate(values)]


def trained(root: Path, job: int, algorithm: str, seed: int, values: list[float]) -> Path:
    """A completed Omniglot 5-way 1-shot run as metalab-train leaves it (job ``job`` of a
    sweep)."""
    run = root / f"{job}_{algorithm}_seed{seed}"
    (run / "checkpoints").mkdir(parents=True)
    config = {"seed": seed,
              "algorithm": {"name": algorithm, "first_order": algorithm == "fomaml",
                            "inner_steps": None if algorithm == "protonet" else 1},
              "dataset": {"name": "omniglot", "ways": 5, "shots": 1},
              "trainer": {"max_steps": 30, "val_check_interval": 10},
              "logger": {"wandb": {"group": "sweep"}}}  # fmt: skip
    results = {
        "status": "completed",
        "metrics": {"test/acc": {"metric": "acc", "mean": values[-1], "ci95": 0.02,
                                 "tasks": 600, "per_step": per_step(values)},
                    "val/acc_best": values[-1] - 0.01},
        "protocol": {"dataset": "omniglot", "split": "test", "ways": 5, "shots": 1,
                     "queries": 15, "inner_steps": len(values) - 1, "tasks": 600},
        "train": {"steps": 30, "cpu_seconds": 100.0 + seed, "wall_seconds": 60.0 + seed},
        "test": {"cpu_seconds": 5.0, "wall_seconds": 4.0},
        "hardware": {"cpu": "Test CPU", "cpu_cores": 2, "torch_threads": 1,
                     "accelerator": "cpu", "devices": 1},
        "metalab_version": "0.1.0", "git_commit": COMMIT, "run_dir": str(run),
        "config": config,
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    with (run / "metrics.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "time/cpu_seconds", "time/wall_seconds", "val/acc"])
        for i, step in enumerate(VALIDATED):
            writer.writerow([0, step, 30.0 * (i + 1), 20.0 * (i + 1), values[-1] - 0.1 + 0.03 * i])
    return run


def evaluated(root: Path, source: Path, name: str, values: list[float], **protocol) -> Path:
    """A metalab-eval of ``source``'s best.ckpt, in a folder of its own."""
    trained_with = read_results(source)
    run = root / name
    run.mkdir(parents=True)
    results = {
        "status": "completed",
        "metrics": {"test/acc": {"metric": "acc", "mean": values[-1], "ci95": 0.015,
                                 "tasks": 600, "per_step": per_step(values, 0.015)}},
        "protocol": trained_with["protocol"] | protocol,
        "checkpoint": str(source / "checkpoints" / "best.ckpt"),
        "seed": trained_with["config"]["seed"], "metalab_version": "0.1.0",
        "git_commit": COMMIT, "run_dir": str(run), "config": trained_with["config"],
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(results))
    return run


@pytest.fixture
def lab(tmp_path) -> Path:
    """A sweep of three algorithms (three, three and two seeds), an evaluation of maml's
    seed-0 checkpoint under the same protocol and one of protonet's at 20 ways."""
    sweep = tmp_path / "sweep"
    settings = [(a, s, v) for a, curves in CURVES.items() for s, v in enumerate(curves)]
    runs = {(a, s): trained(sweep, job, a, s, v) for job, (a, s, v) in enumerate(settings)}
    evaluated(tmp_path / "evals", runs[("maml", 0)], "maml_again", CURVES["maml"][0])
    evaluated(tmp_path / "evals", runs[("protonet", 0)], "protonet_20way", [0.955], ways=20)
    return tmp_path


@pytest.fixture
def report(lab) -> Path:
    out = lab / "report"
    assert main([str(lab / "sweep"), str(lab / "evals"), "--out", str(out)]) == 0
    return out


def csv_rows(path: Path) -> list[dict]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def rows_of(lab: Path):
    runs = [load_run(p.parent) for p in sorted(lab.rglob("results.json"))]
    return build_rows(group_runs(runs))


def test_groups_are_named_by_algorithm_and_only_the_keys_that_differ(report):
    groups = [row["group"] for row in csv_rows(report / "comparison.csv")]
    assert groups == ["maml", "maml, eval of best.ckpt (same protocol)", "fomaml", "protonet",
                      "protonet, eval of best.ckpt (ways=20)"]  # fmt: skip
    header = (report / "comparison.csv").read_text().splitlines()[0]
    assert "algorithm.inner_steps" not in header and "algorithm.first_order" not in header
    markdown = (report / "comparison.md").read_text()
    assert "algorithm.name=" not in markdown and "inner_steps=None" not in markdown


def test_labels_keep_a_differing_setting_beside_the_algorithm(tmp_path):
    for seed, lr in enumerate([0.1, 0.1, 0.01]):
        run = trained(tmp_path / "runs", seed, "maml", seed, CURVES["maml"][seed])
        results = read_results(run)
        results["config"]["algorithm"]["inner_lr"] = lr
        (run / "results.json").write_text(json.dumps(results))
    assert main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    rows = csv_rows(tmp_path / "out" / "comparison.csv")
    assert [r["group"] for r in rows] == ["maml (inner_lr=0.1)", "maml (inner_lr=0.01)"]
    assert [r["runs"] for r in rows] == ["2", "1"]


def test_an_evaluation_of_a_runs_checkpoint_is_not_a_second_seed(lab, report):
    rows = {row["group"]: row for row in csv_rows(report / "comparison.csv")}
    maml = rows["maml"]
    finals = [c[-1] for c in CURVES["maml"]]
    assert maml["kind"] == "train" and maml["runs"] == "3" and maml["seeds"] == "0 1 2"
    assert float(maml["test_mean"]) == pytest.approx(100 * statistics.fmean(finals))
    ci = 4.303 * 100 * statistics.stdev(finals) / math.sqrt(3)  # 3 seeds, not 4
    assert float(maml["test_ci95"]) == pytest.approx(ci)
    again = rows["maml, eval of best.ckpt (same protocol)"]
    assert again["kind"] == "eval" and again["runs"] == "1" and again["seeds"] == "0"
    assert again["evaluated_group"] == "maml"
    assert float(again["test_mean"]) == pytest.approx(92.0)
    assert float(again["test_ci95"]) == pytest.approx(1.5)  # its own CI over tasks, not ± 0
    wide = rows["protonet, eval of best.ckpt (ways=20)"]
    assert float(wide["published"]) == 96.0  # ProtoNets' 20-way 1-shot row, not 5-way's
    assert float(rows["protonet"]["published"]) == 98.8
    # in runs.csv each evaluation follows the run whose checkpoint it tested
    order = [(r["group"], r["kind"], r["seed"]) for r in csv_rows(report / "runs.csv")]
    assert order[:2] == [("maml", "train", "0"),
                         ("maml, eval of best.ckpt (same protocol)", "eval", "0")]  # fmt: skip
    assert order.index(("protonet, eval of best.ckpt (ways=20)", "eval", "0")) == order.index(
        ("protonet", "train", "0")) + 1  # fmt: skip
    assert len(order) == 10


def test_evaluating_a_checkpoint_twice_counts_it_once(lab, tmp_path):
    source = lab / "sweep" / "1_maml_seed1"
    evaluated(lab / "evals", source, "one", CURVES["maml"][1], ways=20)
    evaluated(lab / "evals", source, "two", CURVES["maml"][1], ways=20)
    out = tmp_path / "out"
    assert main([str(lab / "sweep"), str(lab / "evals"), "--out", str(out)]) == 0
    rows = {row["group"]: row for row in csv_rows(out / "comparison.csv")}
    row = rows["maml, eval of best.ckpt (ways=20)"]
    assert row["runs"] == "1" and row["repeated_evaluations"] == "1"
    statuses = [r["status"] for r in csv_rows(out / "runs.csv") if "ways=20" in r["group"]]
    assert sorted(statuses) == ["completed", "completed", "repeated (not counted)"]


def test_evaluations_compared_alone_are_grouped_by_checkpoint_and_protocol(lab, tmp_path):
    maml = lab / "sweep" / "0_maml_seed0"
    evaluated(lab / "evals", maml, "maml_again_later", CURVES["maml"][0])  # a repeat
    evaluated(lab / "evals", maml, "maml_10_steps", [0.2, 0.8, 0.9, 0.93], inner_steps=10)
    out = tmp_path / "out"
    assert main([str(lab / "evals"), "--out", str(out)]) == 0
    rows = {row["group"]: row for row in csv_rows(out / "comparison.csv")}
    assert set(rows) == {
        "maml, eval of best.ckpt (5-way 1-shot, inner_steps=3)",
        "maml, eval of best.ckpt (5-way 1-shot, inner_steps=10)",
        "protonet, eval of best.ckpt (20-way 1-shot, inner_steps=0)",
    }
    again = rows["maml, eval of best.ckpt (5-way 1-shot, inner_steps=3)"]
    assert again["runs"] == "1" and again["repeated_evaluations"] == "1"
    assert float(again["test_ci95"]) == pytest.approx(1.5)  # not ± 0 over "2 runs"
    lines = (out / "comparison.md").read_text().splitlines()
    assert lines[0] == "# metalab-compare"  # two settings: 5-way and 20-way
    assert "- **Runs**: 4 metalab-eval results of 2 checkpoints" in lines


def test_a_moved_sweep_keeps_its_evaluations_under_its_runs(lab, tmp_path):
    """Runs copied from elsewhere: the checkpoint paths the evaluations recorded no longer
    exist, the run is found by its folder name and seed."""
    moved = tmp_path / "copied" / "sweep"
    shutil.move(lab / "sweep", moved)
    out = tmp_path / "out"
    assert main([str(moved), str(lab / "evals"), "--out", str(out)]) == 0
    groups = [row["group"] for row in csv_rows(out / "comparison.csv")]
    assert groups[:2] == ["maml", "maml, eval of best.ckpt (same protocol)"]
    assert groups[-1] == "protonet, eval of best.ckpt (ways=20)"


def test_the_header_names_setting_budget_date_and_commit(report):
    markdown = (report / "comparison.md").read_text()
    lines = markdown.splitlines()
    assert lines[0] == "# metalab-compare: omniglot 5-way 1-shot"
    header = {line.split("**")[1]: line.split("**: ", 1)[1] for line in lines
              if line.startswith("- **")}  # fmt: skip
    assert header["Setting"].startswith("omniglot 5-way 1-shot, 15 queries per class, 600 test")
    assert header["Setting"] == "omniglot 5-way 1-shot, 15 queries per class, 600 test tasks"
    assert header["Evaluations"] == (
        "omniglot 5-way 1-shot, 15 queries per class, 600 test tasks (1 evaluation); "
        "omniglot 20-way 1-shot, 15 queries per class, 600 test tasks (1 evaluation)"
    )
    cpu = statistics.fmean([100.0 + s for c in CURVES.values() for s in range(len(c))])
    assert header["Budget"].startswith(
        f"30 outer steps per run, validation every 10 steps, training {cpu:.3g} s CPU per run"
    )
    assert header["Hardware"] == "Test CPU, 2 cores, 1 torch thread"
    assert header["Runs"].startswith("8 training runs in 3 groups (seeds 0 1 2); 2 metalab-eval")
    assert re.fullmatch(r"report written \d{4}-\d\d-\d\d \d\d:\d\d \w+; runs finished .+",
                        header["Date"])  # fmt: skip
    assert header["Code"] == "metalab 0.1.0 at 0123456"
    assert header["Paths"] == "relative to this report's folder"
    page = (report / "comparison.html").read_text()
    assert "<dt>Setting</dt><dd>omniglot 5-way 1-shot" in page and "0123456" in page


def test_no_absolute_path_is_written(lab, report):
    for name in ("comparison.md", "comparison.csv", "runs.csv", "time_to_accuracy.csv",
                 "comparison.html"):  # fmt: skip
        text = (report / name).read_text()
        assert str(lab) not in text and str(lab.resolve()) not in text, name
    runs = csv_rows(report / "runs.csv")
    assert runs[0]["path"] == "../sweep/0_maml_seed0"
    assert runs[1]["path"] == "../evals/maml_again"
    assert runs[1]["checkpoint"] == "../sweep/0_maml_seed0/checkpoints/best.ckpt"
    page = (report / "comparison.html").read_text()
    assert '<a href="../sweep/0_maml_seed0/results.json">../sweep/0_maml_seed0</a>' in page


def test_every_run_has_its_steps_and_seconds(report):
    runs = {(r["group"], r["seed"]): r for r in csv_rows(report / "runs.csv")}
    for (algorithm, seed), run in runs.items():
        if algorithm in CURVES:
            assert run["train_steps"] == "30"
            assert float(run["train_cpu_seconds"]) == 100.0 + int(seed)
            assert float(run["train_wall_seconds"]) == 60.0 + int(seed)
    markdown = (report / "comparison.md").read_text()
    runs_table = markdown.split("## Runs")[1].split("\n## ")[0]
    assert "| fomaml | 2 | completed | 30 | 102 s | 62 s | 33 ± 2 % |" in runs_table
    assert "| ↳ eval of best.ckpt (ways=20) | 0 | completed |  |  |  | 95.5 ± 1.5 % |" in (
        runs_table)  # fmt: skip
    table = markdown.split("\n\n")[2]  # title, header, then the comparison table
    assert "| maml | 3 | 30 | 101 s | 92 ± 5" in table


def test_validations_are_labelled_with_the_outer_steps_they_followed(lab):
    rows = rows_of(lab)
    assert load_run(lab / "sweep" / "0_maml_seed0").curve[0][0] == 10  # metrics.csv step 9
    fig = figure_validation_curves(rows)
    ax = fig.axes[0]
    xs = {line.get_label(): list(line.get_xdata()) for line in ax.get_lines()}
    assert xs == {"maml": [10, 20, 30], "fomaml": [10, 20, 30], "protonet": [10, 20, 30]}
    assert "outer steps" in ax.get_xlabel()


def test_the_adaptation_curve_has_one_line_per_group_with_its_ci(lab):
    rows = rows_of(lab)
    fig = figure_adaptation_curves(rows)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines() if
             not line.get_label().startswith("_")}  # fmt: skip
    maml = lines["maml"]
    assert list(maml.get_xdata()) == [0, 1, 2, 3]
    expected = 100 * np.mean(CURVES["maml"], axis=0)
    np.testing.assert_allclose(maml.get_ydata(), expected)
    band = next(c for c in ax.collections if tuple(c.get_facecolor()[0][:3]) ==
                to_rgba(maml.get_color())[:3])  # fmt: skip
    top = band.get_paths()[0].vertices[:, 1].max()
    spread = 4.303 * 100 * np.std(CURVES["maml"], axis=0, ddof=1) / math.sqrt(3)
    assert top == pytest.approx((expected + spread).max())
    again = lines["maml, eval of best.ckpt (same protocol)"]
    assert again.get_linestyle() == "--" and again.get_color() == maml.get_color()
    protonet = [c for c in ax.containers if c.get_label().startswith("protonet (no inner")]
    assert protonet  # a point with its CI, not a line
    low, high = ax.get_ylim()  # chance level (20%), 100% and every band in view:
    assert low == 0.0 and high >= 100.0  # protonet's 2-seed CI reaches past 100%
    assert high >= max(c.get_paths()[0].vertices[:, 1].max() for c in ax.collections)


def test_bars_sit_on_their_ticks_the_legend_has_their_colours_and_the_axis_starts_at_0(lab):
    rows = rows_of(lab)
    fig = figure_test_vs_published(rows)
    ax = fig.axes[0]
    ticks = list(ax.get_xticks())
    bars = [p for p in ax.patches if p.get_width() > 0]
    for tick in ticks:
        on_tick = [b for b in bars if abs(b.get_x() + b.get_width() / 2 - tick) < 0.5]
        assert on_tick, tick
        left = min(b.get_x() for b in on_tick)
        right = max(b.get_x() + b.get_width() for b in on_tick)
        assert (left + right) / 2 == pytest.approx(tick)  # the tick's bars centred on it
    drawn = {to_rgba(b.get_facecolor()) for b in bars}
    legend = ax.get_legend()
    swatches = {h.get_label(): to_rgba(h.get_facecolor()) for h in legend.legend_handles}
    assert swatches["metalab"] == to_rgba("tab:blue")  # maml and protonet, inside their CIs?
    assert swatches["metalab, outside the published CI"] == to_rgba("tab:red")
    assert {c for label, c in swatches.items() if "eval" not in label} <= drawn
    first = bars[0]  # maml: 92.0 vs the paper's 98.7 ± 0.4, so red, and so is its swatch
    assert to_rgba(first.get_facecolor()) == to_rgba("tab:red")
    low, high = ax.get_ylim()
    assert low == 0.0 and high >= 100.0  # not cut: fomaml's 35% bar starts at 0
    tops = [b.get_height() for b in bars]
    assert max(tops) <= high


def test_the_group_colours_are_the_same_in_every_plot(lab):
    rows = rows_of(lab)
    colours = palette(rows)
    labels = {row.group.label: colours[id(row.group)] for row in rows}
    assert labels["maml"] == labels["maml, eval of best.ckpt (same protocol)"] == "C0"
    assert labels["fomaml"] == "C1" and labels["protonet"] == "C2"
    validation = figure_validation_curves(rows).axes[0]
    assert {ln.get_label(): ln.get_color() for ln in validation.get_lines()} == {
        "maml": "C0", "fomaml": "C1", "protonet": "C2"}  # fmt: skip


CHECK_SCRIPT = """
<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight);
  const table = document.getElementById('comparison');
  const header = document.getElementById('header');
  document.body.setAttribute('data-images', images.join(' '));
  document.body.setAttribute('data-rows', table.tBodies[0].rows.length + ' eval='
    + table.querySelectorAll('tr.eval').length);
  document.body.setAttribute('data-header', header.getBoundingClientRect().height + ' '
    + [...header.querySelectorAll('dt')].map(d => d.textContent).join(','));
  document.body.setAttribute('data-wide', document.documentElement.scrollWidth + ' '
    + window.innerWidth);
});
</script>
"""


def chromium_or_skip() -> str:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    return chromium


def chromium(binary: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
         "--hide-scrollbars", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_the_page_renders_in_headless_chromium(report, tmp_path):
    """The DOM as Chromium laid it out (header, five rows of which two evaluations, every
    plot decoded), and a screenshot of the whole page (kept in the report's folder as
    page.png, for a person to look at)."""
    binary = chromium_or_skip()
    page = (report / "comparison.html").read_text()
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing to fetch from a network
    names = ["validation_curves", "adaptation_curves", "test_acc", "val_vs_cpu_time"]
    assert re.findall(r'<img alt="([^"]+)"', page) == names
    probe = report / "probe.html"
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    out = chromium(binary, tmp_path / "profile", "--virtual-time-budget=10000",
                   "--window-size=1400,1000", "--dump-dom", probe.as_uri())  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    dom = out.stdout
    images = re.search(r'data-images="([^"]*)"', dom).group(1).split()
    sizes = [tuple(map(int, s.split("x"))) for s in images]
    assert len(sizes) == 4 and all(w > 300 and h > 200 for w, h in sizes), sizes
    assert re.search(r'data-rows="5 eval=2"', dom)
    height, fields = re.search(r'data-header="([\d.]+) ([^"]*)"', dom).groups()
    assert float(height) > 50
    wide, window = map(int, re.search(r'data-wide="(\d+) (\d+)"', dom).groups())
    assert wide <= window  # tables and plots fit the window: no sideways scrolling
    assert fields.split(",") == ["Setting", "Evaluations", "Budget", "Hardware", "Runs",
                                 "Date", "Code", "Paths"]  # fmt: skip
    shot = report / "page.png"
    out = chromium(binary, tmp_path / "profile", "--window-size=1400,5200",
                   f"--screenshot={shot}", (report / "comparison.html").as_uri())  # fmt: skip
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    with Image.open(shot) as image:
        pixels = np.asarray(image.convert("L"))
    assert pixels.shape == (5200, 1400)
    assert (pixels < 128).mean() > 0.005  # text, tables and plots, not a blank page


@pytest.mark.slow
def test_a_real_run_and_its_evaluation(tmp_path):
    """metalab-train with validations after outer steps 2 and 4 (Lightning logs them at
    steps 1 and 3), then metalab-eval of its best.ckpt: the report puts the validations at
    2 and 4 and shows the evaluation under the run, one training run, one seed."""
    run_dir = train_run(tmp_path, "debug=tiny", "trainer.max_steps=4",
                        "trainer.val_check_interval=2")  # fmt: skip
    with (run_dir / "metrics.csv").open() as handle:
        logged = [int(r["step"]) for r in csv.DictReader(handle) if r.get("val/mse")]
    assert logged == [1, 3]  # what Lightning writes: the N-th step's validation at N-1
    assert read_results(run_dir)["train"]["steps"] == 4
    assert [step for step, _ in load_run(run_dir).curve] == [2, 4]
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    out = run_cli("metalab-eval", f"ckpt_path={ckpt}", "eval.tasks=2", "eval.batch=2",
                  f"hydra.run.dir={tmp_path / 'eval'}", cwd=tmp_path)  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    out = run_cli("metalab-compare", "run", "eval", "--out", "report", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "1 runs (0 not completed) in 1 groups, 1 evaluations" in " ".join(out.stdout.split())
    rows = csv_rows(tmp_path / "report" / "comparison.csv")
    assert [(r["group"], r["kind"], r["runs"]) for r in rows] == [
        ("maml", "train", "1"),
        ("maml, eval of best.ckpt (same protocol)", "eval", "1"),
    ]
    results = read_results(run_dir)
    assert float(rows[0]["test_mean"]) == results["metrics"]["test/mse"]["mean"]
    assert float(rows[1]["test_mean"]) == read_results(tmp_path / "eval")["metrics"][
        "test/mse"]["mean"]  # fmt: skip
    commit = (results["git_commit"] or "")[:7]
    markdown = (tmp_path / "report" / "comparison.md").read_text()
    assert "# metalab-compare: sinusoid 10-shot" in markdown
    assert (f"at {commit}" if commit else "commit not recorded") in markdown
    assert str(tmp_path) not in markdown
