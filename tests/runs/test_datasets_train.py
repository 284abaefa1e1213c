"""A tiny end-to-end run per new data set and algorithm: config -> data -> Lightning fit/test.

The data are the real-format fixtures of the data set tests with their shrunken sizes patched
in, so these runs happen in this process (a subprocess would expect the real 600 images per
class), through the same assembly and trainer factory as ``metalab-train``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metalab.algorithms import algorithms_for
from metalab.assembly import build_data, build_module
from metalab.data import cifar, miniimagenet
from metalab.paths import config_dir
from metalab.trainer import make_trainer
from tests.helpers import fake_cifar, fake_miniimagenet

pytestmark = pytest.mark.usefixtures("one_thread")

ALGORITHMS = algorithms_for("classification")  # every one that learns from image episodes
TINY_RUN = [
    "trainer.max_steps=2",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "algorithm.meta_batch=2",
    "val.tasks=1",
    "eval.tasks=2",
    "eval.batch=2",
    "strategy=loop",
    "logger=none",
]
# Only for algorithms with inner steps (the metric methods have none).
INNER_STEPS = {
    "inner_steps": "algorithm.inner_steps=1",
    "eval_inner_steps": "algorithm.eval_inner_steps=1",
}

# Each data set with a different backbone, so every new model also trains end to end.
SETUPS = {
    "miniimagenet": [
        "model=conv4_32", "model.channels=8", "dataset.image_size=16", "dataset.augment=true",
        "dataset.ways=2", "dataset.shots=1", "dataset.queries=2",
    ],
    "cifar_fs": ["model=conv4", "model.channels=8", "dataset.shots=1", "dataset.queries=2"],
    "fc100": [
        "model=resnet12", "model.channels=[4,4,8,8]", "dataset.image_size=16",
        "dataset.shots=1", "dataset.queries=2",
    ],
}  # fmt: skip


@pytest.fixture
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request) -> Path:
    """A tiny real-format copy of the data set, with the loader told its shrunken sizes."""
    monkeypatch.setenv("METALAB_CACHE", str(tmp_path / "cache"))
    if request.param == "miniimagenet":
        monkeypatch.setattr(miniimagenet, "CLASSES", fake_miniimagenet.TINY)
        monkeypatch.setattr(miniimagenet, "IMAGES_PER_CLASS", fake_miniimagenet.PER_CLASS)
        return fake_miniimagenet.pickle_root(tmp_path)
    monkeypatch.setattr(cifar, "IMAGES_PER_CLASS", 4)
    return fake_cifar.make_root(tmp_path)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("data_root", sorted(SETUPS), indirect=True)
def test_tiny_training_run(data_root: Path, tmp_path: Path, algorithm: str, request) -> None:
    dataset = request.node.callspec.params["data_root"]
    overrides = [f"algorithm={algorithm}", f"dataset={dataset}", f"dataset.root={data_root}"]
    with initialize_config_dir(config_dir(), version_base="1.3"):
        keys = compose("train", overrides=[f"algorithm={algorithm}"]).algorithm
        steps = [o for key, o in INNER_STEPS.items() if key in keys]
        cfg = compose("train", overrides=overrides + SETUPS[dataset] + TINY_RUN + steps)
    torch.manual_seed(0)
    data, in_shape, out_features = build_data(cfg)
    side = int(cfg.dataset.image_size)
    assert (in_shape, out_features) == ((3, side, side), int(cfg.dataset.ways))
    module = build_module(cfg, in_shape, out_features)
    before = [p.detach().clone() for p in module.parameters()]
    trainer, checkpoint, _ = make_trainer(cfg, tmp_path / "run", [], "val/acc", "max")
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    assert trainer.global_step == 2
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True))
    summary = module.test_summary
    assert summary["tasks"] == 2 and 0.0 <= summary["mean"] <= 1.0
    assert Path(checkpoint.best_model_path).is_file()
