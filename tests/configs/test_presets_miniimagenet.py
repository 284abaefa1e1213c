"""The mini-ImageNet presets carry their authors' protocols, and each trains on a fake copy.

The key values are those of each paper's code (or the paper where there is none): MAML's README
command lines and section 5.2, Nichol et al.'s README commands, the MAML++ configs
``mini-imagenet_maml++-mini-imagenet_{1,5}_2_0.01_48_5_*.json``, Snell et al.'s section 3.2 and
Ravi & Larochelle's ``config/`` files (Meta-LSTM and their Matching Networks re-run).

Training runs in this process on a generated mini-ImageNet in the pickle form (the writer of
tests/helpers/fake_miniimagenet.py), with the split sizes patched down to 30 / 5 / 5 classes
of 20 images (30 training classes for ProtoNets' 30-way episodes; 20 images for 5 shots + 15
queries) and shrunk to 32x32 by ``dataset.image_size`` (four max-pooling blocks leave 2x2).
Each preset keeps its own ways, shots, queries and steps; only the run is cut
(tests/helpers/configs.py's ``small``: two outer steps of at most two tasks, two validation
and test tasks).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from omegaconf import open_dict

from metalab.data import miniimagenet
from tests.helpers.configs import compose_train, options, small
from tests.helpers.fake_miniimagenet import pickle_root

PRESETS = [p for p in options("experiment") if "_miniimagenet_" in p]
FAKE_CLASSES = {"train": 30, "val": 5, "test": 5}
FAKE_PER_CLASS = 20
SIDE = 32

# inner_lr: the code's alpha 0.01 on its loss summed over the 5 support images = 0.05 here
MAML_1 = dict(
    ways=5, shots=1, queries=15, test_queries=15, inner_steps=5, inner_lr=0.05,
    eval_inner_steps=10, meta_batch=4, optimizer="adam", lr=0.001, scheduler="none",
    max_steps=60_000, model="conv4", channels=32, downsample="maxpool", global_pool=False,
    augment=False,
)  # fmt: skip
MAML_5 = {**MAML_1, "shots": 5, "meta_batch": 2}  # the paper's 5-shot meta-batch
REPTILE_1 = dict(
    name="reptile", ways=5, shots=1, queries=14, test_queries=15, inner_optimizer="adam",
    inner_lr=0.001, inner_steps=8, inner_batch=10, meta_batch=5, outer_step_size=1.0,
    anneal="linear", transductive=True, eval_inner_steps=50, optimizer="sgd", lr=1.0,
    max_steps=100_000, channels=32, downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip
MAMLPP_1 = dict(
    name="mamlpp", ways=5, shots=1, queries=15, inner_steps=5, inner_lr=0.01,
    eval_inner_steps=5, meta_batch=2, multi_step_loss=True, msl_anneal_steps=7500,
    learnable_lr=True, per_step_bn=True, first_order=False, first_order_steps=0,
    optimizer="adam", lr=0.001, scheduler="none", max_steps=50_000, channels=48,
    downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip
PROTONET_1 = dict(
    name="protonet", ways=30, shots=1, queries=15, test_ways=5, test_shots=1, test_queries=15,
    meta_batch=1, optimizer="adam", lr=0.001, scheduler="step", step_size=2000, gamma=0.5,
    channels=64, downsample="maxpool", global_pool=False, eval_tasks=600, augment=False,
)  # fmt: skip
MATCHINGNET_1 = dict(
    name="matchingnet", ways=5, shots=1, queries=15, test_queries=15, fce=False,
    processing_steps=3, meta_batch=1, optimizer="adam", lr=0.0001, max_steps=75_000,
    channels=64, downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip
METALSTM_1 = dict(
    name="metalstm", ways=5, shots=1, queries=15, test_queries=15, inner_steps=12,
    eval_inner_steps=12, hidden_size=20, meta_batch=1, optimizer="adam", lr=0.001,
    grad_clip=0.25, max_steps=75_000, channels=32, downsample="maxpool", global_pool=False,
    augment=False,
)  # fmt: skip
# iMAML has no published mini-ImageNet protocol: MAML's, with iMAML's Omniglot lam/CG/steps
IMAML_1 = {
    **MAML_1,
    "name": "imaml",
    "inner_steps": 16,
    "eval_inner_steps": 16,
    "lam": 2.0,
    "cg_steps": 5,
    "cg_damping": 1.0,
}
# the authors' mini_r2d2 block: 16-way episodes of 15 images a class, Adam 5e-3 halved every
# 2,000 episodes, lam 50 fixed, scale from 1e-4, 10,000 test episodes (Conv-4 64 embedding)
R2D2_1 = dict(
    name="r2d2", ways=16, shots=1, queries=14, test_ways=5, test_shots=1, test_queries=15,
    lam=50.0, learn_lambda=False, scale=1e-4, bias=0.0, meta_batch=1, optimizer="adam",
    lr=0.005, scheduler="step", step_size=2000, gamma=0.5, max_steps=20_000, eval_tasks=10_000,
    model="conv4", channels=64, downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip
CAVIA_1 = dict(
    name="cavia", ways=5, shots=1, queries=15, test_queries=15, inner_steps=2, inner_lr=1.0,
    eval_inner_steps=2, num_context_params=100, film_block=3, first_order=False, meta_batch=4,
    optimizer="adam", lr=0.001, scheduler="step", step_size=5000, gamma=0.9, max_steps=60_000,
    model="conv4", channels=32, downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip
BOIL_1 = dict(
    name="boil", ways=5, shots=1, queries=15, test_queries=15, inner_steps=1, inner_lr=0.5,
    eval_inner_steps=1, eval_inner_lr=0.5, first_order=False, meta_batch=4, optimizer="adam",
    lr=0.001, scheduler="none", max_steps=30_000, model="conv4", channels=64,
    downsample="maxpool", global_pool=False, augment=False,
)  # fmt: skip

PROTOCOLS = {
    "maml_miniimagenet_5w1s": {**MAML_1, "name": "maml", "first_order": False},
    "maml_miniimagenet_5w5s": {**MAML_5, "name": "maml", "first_order": False},
    "fomaml_miniimagenet_5w1s": {**MAML_1, "name": "fomaml", "first_order": True},
    "fomaml_miniimagenet_5w5s": {**MAML_5, "name": "fomaml", "first_order": True},
    "anil_miniimagenet_5w1s": {**MAML_1, "name": "anil", "first_order": False},
    "anil_miniimagenet_5w5s": {**MAML_5, "name": "anil", "first_order": False},
    "metasgd_miniimagenet_5w1s": {**MAML_1, "name": "metasgd", "inner_steps": 1,
                                  "eval_inner_steps": 1, "inner_lr": 0.01},
    "metasgd_miniimagenet_5w5s": {**MAML_5, "name": "metasgd", "inner_steps": 1,
                                  "eval_inner_steps": 1, "inner_lr": 0.01},
    "mamlpp_miniimagenet_5w1s": MAMLPP_1,
    "mamlpp_miniimagenet_5w5s": {**MAMLPP_1, "shots": 5},  # still meta-batch 2, 15 queries
    "reptile_miniimagenet_5w1s": REPTILE_1,
    "reptile_miniimagenet_5w5s": {**REPTILE_1, "shots": 5, "queries": 10},  # train-shots 15
    "protonet_miniimagenet_5w1s": PROTONET_1,
    "protonet_miniimagenet_5w5s": {**PROTONET_1, "ways": 20, "shots": 5, "test_shots": 5},
    "matchingnet_miniimagenet_5w1s": MATCHINGNET_1,
    "matchingnet_miniimagenet_5w5s": {**MATCHINGNET_1, "shots": 5},
    "metalstm_miniimagenet_5w1s": METALSTM_1,
    "metalstm_miniimagenet_5w5s": {**METALSTM_1, "shots": 5, "inner_steps": 8,
                                   "eval_inner_steps": 8, "max_steps": 50_000},
    "imaml_miniimagenet_5w1s": IMAML_1,
    "r2d2_miniimagenet_5w1s": R2D2_1,
    "r2d2_miniimagenet_5w5s": {**R2D2_1, "shots": 5, "queries": 10, "test_shots": 5},
    "cavia_miniimagenet_5w1s": CAVIA_1,
    "cavia_miniimagenet_5w5s": {**CAVIA_1, "shots": 5, "meta_batch": 2},
    "boil_miniimagenet_5w1s": BOIL_1,
    "boil_miniimagenet_5w5s": {**BOIL_1, "shots": 5},
}  # fmt: skip


def test_every_mini_imagenet_preset_has_its_protocol_here():
    assert sorted(PROTOCOLS) == PRESETS


@pytest.mark.parametrize("experiment", sorted(PROTOCOLS))
def test_mini_imagenet_presets_carry_their_authors_settings(experiment):
    cfg = compose_train(f"experiment={experiment}")
    flat = {
        **cfg.algorithm,
        **cfg.dataset,
        **{k: v for k, v in cfg.optimizer.items() if k != "name"},
        "optimizer": cfg.optimizer.name,
        "max_steps": cfg.trainer.max_steps,
        "eval_tasks": cfg.eval.tasks,
        "model": cfg.model.name,
        "channels": cfg.model.channels,
        "downsample": cfg.model.downsample,
        "global_pool": cfg.model.global_pool,
    }
    flat["name"] = cfg.algorithm.name
    for key, value in PROTOCOLS[experiment].items():
        assert flat[key] == value, key
    assert cfg.dataset.name == "miniimagenet" and cfg.dataset.image_size == 84
    assert cfg.dataset.split == "ravi"
    assert cfg.eval.tasks == PROTOCOLS[experiment].get("eval_tasks", 600)


def fake_blob(part: str, first_class: int) -> dict:
    """A pickle of FAKE_CLASSES[part] classes of FAKE_PER_CLASS 84x84 images: a colour per
    class with noise, rows in a shuffled order as in the shared pickles."""
    rng = np.random.default_rng(first_class)
    n = FAKE_CLASSES[part]
    colours = np.random.default_rng(0).integers(0, 256, (sum(FAKE_CLASSES.values()), 3))
    images = np.empty((n * FAKE_PER_CLASS, 84, 84, 3), dtype=np.uint8)
    order = rng.permutation(n * FAKE_PER_CLASS)  # row r holds image order[r]
    for row, image in enumerate(order):
        colour = colours[first_class + image // FAKE_PER_CLASS]
        noise = rng.integers(-40, 41, (84, 84, 3))
        images[row] = np.clip(colour + noise, 0, 255)
    rows = np.argsort(order)
    class_dict = {
        f"n{first_class + c:08d}": rows[c * FAKE_PER_CLASS : (c + 1) * FAKE_PER_CLASS].tolist()
        for c in range(n)
    }
    return {"image_data": images, "class_dict": class_dict}


@pytest.fixture(scope="module")
def fake_miniimagenet(tmp_path_factory):
    """The generated copy's root, with the split sizes patched to match it."""
    base = tmp_path_factory.mktemp("fake-mini")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(miniimagenet, "CLASSES", FAKE_CLASSES)
        patch.setattr(miniimagenet, "IMAGES_PER_CLASS", FAKE_PER_CLASS)
        starts = {"train": 0, "val": FAKE_CLASSES["train"]}
        starts["test"] = starts["val"] + FAKE_CLASSES["val"]
        root = pickle_root(base, {part: fake_blob(part, starts[part]) for part in starts})
        yield root, base / "cache"


@pytest.mark.slow
@pytest.mark.parametrize("experiment", PRESETS)
def test_mini_imagenet_preset_trains_two_steps(experiment, fake_miniimagenet, tmp_path, one_thread):
    from metalab.train import train

    root, cache = fake_miniimagenet
    cfg = small(experiment)
    with open_dict(cfg):
        cfg.dataset.root = str(root)
        cfg.dataset.cache_dir = str(cache)
        cfg.dataset.image_size = SIDE
    train(cfg, tmp_path / "run")
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "completed"
    assert results["train"]["steps"] == 2
    assert results["num_test_tasks"] == 2
    config = results["config"]
    assert config["algorithm"]["name"] == cfg.algorithm.name
    assert (config["dataset"]["ways"], config["dataset"]["shots"]) == (
        cfg.dataset.ways,
        cfg.dataset.shots,
    )
