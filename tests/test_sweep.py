"""A Hydra multirun over algorithms and seeds: one job directory and one W&B run per job."""

from __future__ import annotations

from cli import read_results, run_cli, wandb_run_record, wandb_summary


def test_multirun_sweep_over_algorithms_and_seeds(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli(
        "metalab-train",
        "-m",
        "algorithm=maml,fomaml",
        "seed=0,1",
        "trainer.max_steps=20",
        "trainer.val_check_interval=10",
        "trainer.enable_progress_bar=false",
        "val.tasks=10",
        "eval.tasks=20",
        "strategy=loop",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    jobs = sorted(p for p in sweep.iterdir() if (p / "results.json").is_file())
    assert len(jobs) == 4
    seen = set()
    for job in jobs:
        results = read_results(job)
        config = results["config"]
        seen.add((config["algorithm"]["name"], config["seed"]))
        assert config["algorithm"]["first_order"] == (config["algorithm"]["name"] == "fomaml")
        assert f"algorithm={config['algorithm']['name']}" in job.name  # overrides name the dir
        summary = wandb_summary(job)
        assert summary["config"]["seed"] == config["seed"]
        assert summary["state"] == "finished"
        assert wandb_run_record(job)["run_group"] == sweep.name  # one group per sweep
    assert seen == {("maml", 0), ("maml", 1), ("fomaml", 0), ("fomaml", 1)}
