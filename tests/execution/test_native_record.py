"""results.json says which path Conv-4's first block took (``metalab.native``): the native
kernel and the composite block differ in their last bits, so two runs of one config that
disagree slightly must be told apart by their results alone."""

from __future__ import annotations

import os

import pytest

from metalab.native import fused_first_block
from tests.helpers.cli import read_results, train_run

pytestmark = [
    pytest.mark.data,
    pytest.mark.skipif(
        "METALAB_DATA" not in os.environ,
        reason="set METALAB_DATA to the folder that holds omniglot/ to run the real-data tests",
    ),
]

# Omniglot's Conv-4 with max-pooling (the preset's MAML network uses stride-2 convolutions,
# which have no pooling to fuse), 32 channels: two outer steps and two test tasks.
TINY_OMNIGLOT = (
    "debug=tiny",
    "experiment=maml_omniglot_5w1s",
    "model.downsample=maxpool",
    "model.channels=32",
)


@pytest.mark.parametrize("switch", ["on", "off"], ids=["default", "METALAB_NATIVE_KERNELS=0"])
def test_a_run_records_the_path_its_first_block_took(tmp_path, monkeypatch, switch):
    if switch == "off":
        monkeypatch.setenv("METALAB_NATIVE_KERNELS", "0")  # the run's subprocess inherits it
    # a fresh interpreter: the switch is read once per process, and this one has read it
    kernels = read_results(train_run(tmp_path, *TINY_OMNIGLOT, fresh=True))["kernels"]
    passes = kernels["passes"]
    assert passes["composite"] > 0  # the inner loop's graphs are differentiated twice
    assert "a graph that may be differentiated twice" in kernels["reason"]
    if switch == "off" or fused_first_block.library() is None:
        why = "switched off (METALAB_NATIVE_KERNELS=0)" if switch == "off" else None
        assert kernels["first_block"] == "composite" and passes["native"] == 0
        assert (why or fused_first_block.unavailable()) in kernels["reason"]
    else:  # evaluation's scoring runs without gradients: the kernel's passes
        assert kernels["first_block"] == "native" and passes["native"] > 0
        assert kernels["reason"].startswith(f"the native kernel ran {passes['native']} of")
