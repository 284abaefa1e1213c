"""Where the checkout's own files are, for tests that read them (README, conf/, benchmarks/):
one constant instead of counting ``parents`` from each test file's depth."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
CONF = ROOT / "conf"
BENCHMARKS = ROOT / "benchmarks"
