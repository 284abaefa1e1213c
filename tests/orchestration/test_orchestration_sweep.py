"""A 4-job sweep (2 algorithms x 2 seeds) with the joblib launcher, made once: one job
directory named by its overrides and one finished W&B run per job, with its group, name, tags
and saved id; a job re-run in its directory continues its W&B run; metalab-compare reports
the sweep with the runs' own numbers, as PNGs and as an HTML page that headless Chromium
renders."""

from __future__ import annotations

import csv
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image

from tests.helpers.cli import read_results, run_cli, wandb_run_record, wandb_summary

TINY = [
    "trainer.max_steps=6",
    "trainer.val_check_interval=3",
    "trainer.enable_progress_bar=false",
    "val.tasks=5",
    "eval.tasks=10",
    "strategy=loop",
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("joblib_sweep")
    out = run_cli(
        "metalab-train",
        "-m",
        "hydra/launcher=parallel",
        "algorithm=maml,fomaml",
        "seed=0,1",
        *TINY,
        f"hydra.sweep.dir={where / 'sweep'}",
        cwd=where,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return where / "sweep"


def jobs(sweep: Path) -> list[Path]:
    return sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())


def test_every_job_has_its_own_named_grouped_wandb_run(sweep):
    found = jobs(sweep)
    assert len(found) == 4
    ids = set()
    for job in found:
        config = read_results(job)["config"]
        run = wandb_run_record(job)
        assert run["run_group"] == sweep.name
        assert run["job_type"] == "train"
        number, name = job.name.split("_", 1)
        assert run["display_name"] == name  # the run is named like its job directory:
        # algorithm and dataset, then only the keys the sweep varies (not TINY's)
        assert name == f"{config['algorithm']['name']}_sinusoid,seed={config['seed']}"
        assert {config["algorithm"]["name"], "sinusoid", "mlp"} <= set(run["tags"])
        assert run["run_id"] == (job / "wandb_run_id").read_text().strip()
        logged = run["config"]["update"]  # the job's resolved config, as W&B stored it
        assert logged["seed"] == config["seed"] and logged["algorithm"] == config["algorithm"]
        assert config["algorithm"]["first_order"] == (config["algorithm"]["name"] == "fomaml")
        ids.add(run["run_id"])
    assert len(ids) == 4
    assert {
        (read_results(j)["config"]["algorithm"]["name"], read_results(j)["config"]["seed"])
        for j in found
    } == {("maml", 0), ("maml", 1), ("fomaml", 0), ("fomaml", 1)}
    summary = wandb_summary(found[0])  # read the documented way: `wandb leet inspect`
    assert summary["state"] == "finished"
    assert summary["config"]["seed"] == read_results(found[0])["config"]["seed"]


def test_a_job_run_again_in_its_directory_continues_its_wandb_run(sweep, tmp_path):
    """What a resumed sweep or a requeued SLURM job does: same directory, same W&B run."""
    job = tmp_path / "job"
    shutil.copytree(jobs(sweep)[0], job, symlinks=True)
    shutil.rmtree(job / "checkpoints")
    (job / "results.json").unlink()  # as if the first attempt had died before the end
    first_id = (job / "wandb_run_id").read_text().strip()
    overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
    overrides = [o for o in overrides if not o.startswith("hydra")]
    out = run_cli("metalab-train", *overrides, f"hydra.run.dir={job}", "resume=true", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    # the unfinished attempt was moved aside (never deleted); the id file stayed in place
    attempts = sorted(job.glob("wandb/offline-run-*")) + sorted(
        job.glob("attempt-*/wandb/offline-run-*")
    )
    assert len(attempts) == 2
    assert all(a.name.endswith(f"-{first_id}") for a in attempts)
    assert wandb_run_record(job)["run_id"] == first_id


@pytest.fixture(scope="module")
def report(sweep, tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("compare")
    out = run_cli("metalab-compare", str(sweep), "--out", str(where / "report"), cwd=where)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "metalab-compare: test metric over seeds" in out.stdout  # the rich table
    assert "4 runs (0 not completed) in 2 groups" in out.stdout
    return where / "report"


def test_compare_table_holds_the_runs_own_numbers(sweep, report):
    by_algorithm: dict[str, list[dict]] = {}
    for job in jobs(sweep):
        results = read_results(job)
        by_algorithm.setdefault(results["config"]["algorithm"]["name"], []).append(results)
    with (report / "comparison.csv").open() as handle:
        rows = {row["algorithm.name"]: row for row in csv.DictReader(handle)}
    assert set(rows) == {"maml", "fomaml"}
    for name, runs in by_algorithm.items():
        row = rows[name]
        tests = [r["metrics"]["test/mse"]["mean"] for r in runs]
        vals = [r["metrics"]["val/mse_best"] for r in runs]
        assert int(row["runs"]) == 2 and row["seeds"] == "0 1"
        assert float(row["test_mean"]) == pytest.approx(statistics.fmean(tests), rel=1e-12)
        # Student's t with 1 degree of freedom: 12.706 * std / sqrt(2)
        ci = 12.706 * statistics.stdev(tests) / 2**0.5
        assert float(row["test_ci95"]) == pytest.approx(ci, rel=1e-9)
        assert float(row["val_best_mean"]) == pytest.approx(statistics.fmean(vals), rel=1e-9)
    markdown = (report / "comparison.md").read_text()
    table = markdown.split("\n## ")[0]  # the comparison table, before the time section
    assert table.count("\n| maml |") == 1 and table.count("\n| fomaml |") == 1


def test_compare_writes_valid_pngs(report):
    pngs = ("validation_curves.png", "adaptation_curves.png", "test_mse.png", "val_vs_cpu_time.png")
    for name in pngs:
        with Image.open(report / name) as image:
            image.verify()
            assert image.format == "PNG" and image.size[0] > 300 and image.size[1] > 200


CHECK_SCRIPT = """
<script>
window.addEventListener('load', () => {
  const images = [...document.images].map(i => i.naturalWidth + 'x' + i.naturalHeight);
  const table = document.getElementById('comparison');
  const box = table.getBoundingClientRect();
  document.body.setAttribute('data-images', images.join(' '));
  document.body.setAttribute('data-table', box.width + 'x' + box.height + ' rows='
    + table.tBodies[0].rows.length);
});
</script>
"""


def test_compare_html_renders_offline_in_headless_chromium(report, tmp_path):
    page = (report / "comparison.html").read_text()
    assert not re.search(r"(src|href)=\"https?:", page)  # nothing to fetch from a network
    # validation and adaptation curves, test, val vs CPU time
    assert page.count('src="data:image/png;base64,') == 4
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium; .ci/run does it)")
    probe = tmp_path / "probe.html"  # the page plus a script that measures what rendered
    probe.write_text(page.replace("</body>", CHECK_SCRIPT + "</body>"))
    out = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--user-data-dir=" + str(tmp_path / "profile"),
            "--virtual-time-budget=10000",
            "--dump-dom",
            probe.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    images = re.search(r'data-images="([^"]*)"', out.stdout)
    table = re.search(r'data-table="(\d+(?:\.\d+)?)x(\d+(?:\.\d+)?) rows=(\d+)"', out.stdout)
    assert images and table, out.stdout[:2000]
    sizes = [tuple(map(int, s.split("x"))) for s in images.group(1).split()]
    assert len(sizes) == 4 and all(w > 300 and h > 200 for w, h in sizes), sizes
    assert float(table.group(1)) > 100 and float(table.group(2)) > 20 and table.group(3) == "2"
