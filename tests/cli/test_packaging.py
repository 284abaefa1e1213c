"""The wheel carries conf/, so an installed metalab runs from any directory."""

from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path

from tests.helpers.paths import ROOT


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    out = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out


def test_wheel_installs_into_a_fresh_venv_and_composes_from_elsewhere(tmp_path):
    dist = tmp_path / "dist"
    run(sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist), cwd=ROOT)
    wheel = next(dist.glob("metalab-*.whl"))

    venv = tmp_path / "fresh"
    run(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    python = venv / "bin" / "python"
    fresh_site = Path(
        run(
            str(python),
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            cwd=tmp_path,
        ).stdout.strip()
    )
    # Dependencies (torch, lightning, ...) come from this environment; metalab from the wheel.
    (fresh_site / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run(str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(wheel), cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run(str(python), "-c", "import metalab; print(metalab.__file__)", cwd=elsewhere)
    assert str(fresh_site) in where.stdout  # the wheel's copy, not the source checkout
    job = run(str(venv / "bin" / "metalab-train"), "--cfg", "job", cwd=elsewhere).stdout
    assert "name: maml" in job and "name: sinusoid" in job
    omniglot = run(
        str(venv / "bin" / "metalab-train"),
        "experiment=maml_omniglot_5w1s",
        "--cfg",
        "job",
        cwd=elsewhere,
    ).stdout
    assert "inner_lr: 2.0" in omniglot and "downsample: stride" in omniglot
