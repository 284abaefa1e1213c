"""The Docker image and compose file say what the README promises (no Docker daemon here).

The image's install path is scripts/install.sh, the script .ci/run runs on every CI build,
so CI exercises it; these tests pin the rest: the base, the user, the mounts, the GPU.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()


def instructions(keyword: str) -> list[str]:
    return [
        line.split(None, 1)[1]
        for line in DOCKERFILE.splitlines()
        if line.strip().upper().startswith(keyword + " ")
    ]


def test_base_is_a_cuda12_pytorch_runtime_image():
    base = re.search(r"ARG BASE_IMAGE=(\S+)", DOCKERFILE).group(1)
    assert re.fullmatch(r"pytorch/pytorch:2\.\d+\.\d+-cuda12\.\d+-cudnn\d+-runtime", base)
    assert instructions("FROM") == ["${BASE_IMAGE}"]


def test_image_installs_with_the_ci_install_script_and_runs_as_a_user():
    assert any("bash scripts/install.sh" in run for run in instructions("RUN"))
    assert "bash scripts/install.sh" in (ROOT / ".ci" / "run").read_text()
    users = instructions("USER")
    assert users and users[-1] not in ("root", "0")
    assert instructions("ENTRYPOINT") == ['["metalab-train"]']


def test_compose_reserves_a_gpu_and_mounts_data_read_only():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    service = compose["services"]["metalab"]
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    volumes = service["volumes"]
    assert any(v.endswith(":/data:ro") for v in volumes)
    assert any(v.endswith(":/work/outputs") for v in volumes)
    assert service["env_file"][0]["path"] == "wandb.env"
    assert service["build"]["dockerfile"] == "docker/Dockerfile"
    example = (ROOT / "docker" / "wandb.env.example").read_text()
    assert "WANDB_API_KEY=" in example
    assert "docker/wandb.env" in (ROOT / ".gitignore").read_text().splitlines()
