"""Start-up time of the console scripts: how long ``--help``, ``--cfg job`` and a shell
completion query take, beside two baselines measured in the same run (a bare interpreter and
``import torch``), and the heavy path (``python -m metalab.train --help``, which imports the
training job). Run it on a quiet machine:

    python benchmarks/startup.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def commands() -> list[tuple[str, list[str], dict[str, str]]]:
    py = sys.executable
    train, evaluate = str(BIN / "metalab-train"), str(BIN / "metalab-eval")
    completion = {"COMP_LINE": "metalab-train algorithm=fo", "COMP_POINT": "26"}
    return [
        ("python -c pass (baseline)", [py, "-c", "pass"], {}),
        ("python -c 'import torch'", [py, "-c", "import torch"], {}),
        ("metalab-train --help", [train, "--help"], {}),
        ("metalab-train --cfg job", [train, "--cfg", "job"], {}),
        ("metalab-eval --help", [evaluate, "--help"], {}),
        ("metalab-train -sc query=bash", [train, "-sc", "query=bash"], completion),
        ("python -m metalab.train --help", [py, "-m", "metalab.train", "--help"], {}),
    ]


def seconds(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, capture_output=True, check=True, env={**os.environ, **env})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, argv, env in commands():
        seconds(argv, env)  # warm the file cache
        times = [seconds(argv, env) for _ in range(args.repeats)]
        rows.append((name, statistics.median(times)))
    torch_s = rows[1][1]
    print(f"{'command':34s} {'median s':>9s} {'/ import torch':>15s}")
    for name, median in rows:
        print(f"{name:34s} {median:9.2f} {median / torch_s:15.2f}")


if __name__ == "__main__":
    main()
