"""The Docker image, compose file and build context say what the README promises.

There is no Docker daemon here, so the files are read, not built: the image installs with
scripts/install.sh (the script .ci/run runs on every CI build, so CI exercises it) and these
tests pin the rest: the context, the torch, the user, the extras, the commit, the services.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from packaging.requirements import Requirement

from metalab.results import git_commit
from tests.helpers.paths import ROOT

DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
COMPOSE = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def instructions(keyword: str) -> list[str]:
    """The arguments of every ``keyword`` instruction, continuation lines joined."""
    logical, lines = "", []
    for line in DOCKERFILE.splitlines():
        if line.strip().startswith("#") or not line.strip():
            continue
        logical += line.rstrip()
        if logical.endswith("\\"):
            logical = logical[:-1].rstrip() + " "
            continue
        lines.append(logical.strip())
        logical = ""
    return [ln.split(None, 1)[1] for ln in lines if ln.upper().startswith(keyword + " ")]


def build_arg(name: str) -> str:
    """The default of ``ARG name=default`` in the Dockerfile."""
    found = [a.split("=", 1)[1] for a in instructions("ARG") if a.split("=", 1)[0] == name]
    assert len(found) == 1, f"ARG {name} is declared {len(found)} times"
    return found[0].strip('"')


def dockerignore_regex(pattern: str) -> re.Pattern:
    """Docker's .dockerignore pattern syntax: ``**`` any folders, ``*``/``?`` within one."""
    pattern = pattern.strip("/")
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def sent_to_docker(path: str) -> bool:
    """Whether ``path`` is in the build context: the last pattern matching it or one of its
    parent folders decides, ``!`` re-including (Docker's rule)."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    sent = True
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        exception = line.startswith("!")
        regex = dockerignore_regex(line.lstrip("!"))
        if any(regex.match(c) for c in candidates):
            sent = exception
    return sent


def test_the_matcher_follows_dockerignore_rules():
    assert dockerignore_regex("**/__pycache__").match("src/a/__pycache__")
    assert dockerignore_regex("**/__pycache__").match("__pycache__")
    assert not dockerignore_regex("*").match("src/a.py")  # a parent match excludes it instead
    assert dockerignore_regex("**/*.py[cod]").match("src/m/x.pyc")
    assert not dockerignore_regex("**/*.py[cod]").match("src/m/x.py")


def test_build_context_holds_what_the_image_copies_and_nothing_else():
    copied = []
    for copy in instructions("COPY"):
        words = [w for w in copy.split() if not w.startswith("--")]
        copied += words[:-1]
    assert {"pyproject.toml", "README.md", "scripts", "conf", "src"} <= set(copied)
    for source in copied:
        probe = {"scripts": "scripts/install.sh", "conf": "conf/train.yaml"}.get(source, source)
        probe = "src/metalab/results.py" if source == "src" else probe
        assert (ROOT / probe).exists(), probe
        assert sent_to_docker(probe), f"{probe} is copied by the Dockerfile but .dockerignored"
    for kept_out in (
        "data/omniglot/images_background.zip",
        "outputs/runs/2026-01-01/x/results.json",
        ".venv/bin/python",
        ".git/HEAD",
        ".git/objects/pack/big.pack",
        "docker/wandb.env",
        "wandb/offline-run-x/run-x.wandb",
        "mlruns/0/meta.yaml",
        "multirun/2026-01-01/0/train.log",
        "lightning_logs/version_0/metrics.csv",
        "src/metalab/__pycache__/cli.cpython-311.pyc",
        "src/metalab.egg-info/PKG-INFO",
        ".pytest_cache/v/cache/lastfailed",
        "tests/cli/test_docker.py",
    ):
        assert not sent_to_docker(kept_out), f"{kept_out} would be sent to the Docker daemon"


def test_image_installs_the_tested_torch_cpu_by_default():
    install = (ROOT / "scripts" / "install.sh").read_text()
    tested = re.search(r"torch==\$\{METALAB_TORCH_VERSION:-([^}]+)\}", install).group(1)
    assert build_arg("TORCH_VERSION") == tested
    assert f"`torch=={tested}`" in (ROOT / "README.md").read_text()
    pyproject = (ROOT / "pyproject.toml").read_text()
    torch = Requirement(re.search(r'^\s*"(torch[^"]*)"', pyproject, re.M).group(1))
    assert tested in torch.specifier
    assert any('"torch==${TORCH_VERSION}"' in run for run in instructions("RUN"))
    # a plain Python base: no torch of its own that install.sh would keep instead
    assert build_arg("PYTHON_IMAGE").startswith("python:3.")
    assert instructions("FROM") == ["${PYTHON_IMAGE}"]
    assert build_arg("TORCH_INDEX_URL") == CPU_INDEX
    services = COMPOSE["services"]
    assert services["metalab"]["build"]["args"]["TORCH_INDEX_URL"] == CPU_INDEX
    assert "cpu" not in services["metalab-gpu"]["build"]["args"]["TORCH_INDEX_URL"]


def test_image_installs_with_the_ci_script_and_the_sweep_extras():
    installs = [run for run in instructions("RUN") if "bash scripts/install.sh" in run]
    assert installs == ['bash scripts/install.sh "${METALAB_EXTRAS}"']
    assert "sweep" in build_arg("METALAB_EXTRAS").split(",")
    pyproject = (ROOT / "pyproject.toml").read_text()
    sweep = re.search(r"^sweep = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    assert '"hydra-optuna-sweeper' in sweep and '"hydra-submitit-launcher' in sweep
    assert "bash scripts/install.sh" in (ROOT / ".ci" / "run").read_text()
    # torch is installed before install.sh, which keeps a torch that is present
    assert DOCKERFILE.index('"torch==${TORCH_VERSION}"') < DOCKERFILE.index(
        "bash scripts/install.sh"
    )
    assert 'python -c "import torch"' in (ROOT / "scripts" / "install.sh").read_text()


def test_user_takes_the_host_uid_and_gid_from_build_arguments():
    assert build_arg("UID") == "1000" and build_arg("GID") == "1000"
    useradd = next(run for run in instructions("RUN") if "useradd" in run)
    assert '--uid "${UID}"' in useradd and '--gid "${GID}"' in useradd
    assert 'groupadd --gid "${GID}"' in useradd
    assert instructions("USER") == ["metalab"]
    for copy in instructions("COPY"):
        assert copy.startswith("--chown=${UID}:${GID} ")
    for name in ("metalab", "metalab-gpu"):
        args = COMPOSE["services"][name]["build"]["args"]
        assert args["UID"] == "${METALAB_UID:-1000}"
        assert args["GID"] == "${METALAB_GID:-1000}"
    assert instructions("ENTRYPOINT") == ['["metalab-train"]']


def test_commit_is_baked_in_as_the_variable_results_json_reads(monkeypatch):
    assert build_arg("GIT_COMMIT") == ""
    assert instructions("ENV")[-1] == 'METALAB_GIT_COMMIT="${GIT_COMMIT}"'
    for name in ("metalab", "metalab-gpu"):
        assert COMPOSE["services"][name]["build"]["args"]["GIT_COMMIT"] == "${GIT_COMMIT:-}"
    monkeypatch.setenv("METALAB_GIT_COMMIT", "0123abc")
    assert git_commit() == "0123abc"


def test_an_empty_commit_variable_falls_back_to_the_checkout(monkeypatch):
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    monkeypatch.setenv("METALAB_GIT_COMMIT", "")  # what an image built without GIT_COMMIT has
    assert git_commit() == head.stdout.strip()


def test_cpu_service_starts_anywhere_and_gpus_are_reserved_only_in_the_gpu_profile():
    services = COMPOSE["services"]
    assert set(services) == {"metalab", "metalab-gpu"}
    cpu, gpu = services["metalab"], services["metalab-gpu"]
    assert "profiles" not in cpu and "deploy" not in cpu and "gpus" not in cpu
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert cpu["image"] != gpu["image"]
    for service in (cpu, gpu):
        assert service["build"]["context"] == ".."
        assert service["build"]["dockerfile"] == "docker/Dockerfile"
        assert any(v.endswith(":/data:ro") for v in service["volumes"])
        assert "../outputs:/work/outputs" in service["volumes"]
        assert service["env_file"][0]["path"] == "wandb.env"
    example = (ROOT / "docker" / "wandb.env.example").read_text()
    assert "WANDB_API_KEY=" in example
    assert "docker/wandb.env" in (ROOT / ".gitignore").read_text().splitlines()
