"""Checkpoints are verified before every load (issue 18, item 5): a file whose zip CRC fails or
whose content differs from the sha256 written beside it at save time is refused in one line
naming it and the newest checkpoint of the run that verifies; nothing of the run is touched,
and a checkpoint written before the hashes existed still loads (CRC only)."""

from __future__ import annotations

import hashlib
import shutil
import struct
import zipfile
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

from metalab import checkpoints
from metalab.checkpoints import (
    AtomicCheckpointIO,
    checkpoint_damage,
    copy_checkpoint,
    hash_file,
    load_checkpoint,
)
from metalab.errors import CheckpointError
from metalab.paths import config_dir
from tests.helpers.cli import run_cli, train_run

# Four sinusoid steps, validated twice: best.ckpt and last.ckpt, in about 7 s.
TINY = [
    "trainer.max_steps=4",
    "trainer.val_check_interval=2",
    "trainer.enable_progress_bar=false",
    "algorithm.meta_batch=2",
    "val.tasks=4",
    "eval.tasks=6",
    "strategy=loop",
    "logger=csv",
]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A completed run, never modified: each test damages a copy of it."""
    return train_run(tmp_path_factory.mktemp("finished"), *TINY)


@pytest.fixture
def run_dir(finished: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(finished, tmp_path / "run"))  # copy2: mtimes kept


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def flip_byte(ckpt: Path, member: zipfile.ZipInfo) -> str:
    """Flip one byte inside a zip member's stored bytes, as a bad disk or a bad copy would."""
    raw = bytearray(ckpt.read_bytes())
    header = member.header_offset
    name_len, extra_len = struct.unpack("<HH", raw[header + 26 : header + 30])
    raw[header + 30 + name_len + extra_len + 3] ^= 0x80  # a float32's sign bit
    ckpt.write_bytes(bytes(raw))
    return member.filename


def flip_weight_byte(ckpt: Path) -> str:
    """Damage a model weight (not the optimiser state); returns the zip member changed."""
    weights = {t.numpy().tobytes() for t in load_checkpoint(ckpt)["state_dict"].values()}
    with zipfile.ZipFile(ckpt) as archive:
        member = next(i for i in archive.infolist() if i.file_size and archive.read(i) in weights)
    return flip_byte(ckpt, member)


def flip_first_tensor_byte(ckpt: Path) -> str:
    with zipfile.ZipFile(ckpt) as archive:
        member = next(i for i in archive.infolist() if "/data/" in i.filename and i.file_size)
    return flip_byte(ckpt, member)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("metalab: error:")]


def test_every_checkpoint_of_a_run_has_its_sha256_beside_it(finished):
    folder = finished / "checkpoints"
    assert sorted(p.name for p in folder.iterdir()) == [
        "best.ckpt",
        "best.ckpt.sha256",
        "last.ckpt",
        "last.ckpt.sha256",
    ]  # and no .partial file left behind
    for name in ("best.ckpt", "last.ckpt"):
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        assert hash_file(folder / name).read_text() == f"{digest}  {name}\n"  # sha256sum -c
        assert checkpoint_damage(folder / name) is None


@pytest.mark.parametrize("trainer", ["cpu", "ddp_cpu"])
def test_the_trainer_saves_and_loads_every_checkpoint_through_the_verifying_io(tmp_path, trainer):
    """ModelCheckpoint's best/last and the interrupt checkpoint all call
    trainer.save_checkpoint, and fit/test(ckpt_path=...) load through the same plugin, with one
    process or with DDP."""
    from metalab.trainer import make_trainer

    with initialize_config_dir(config_dir(), version_base="1.3"):
        cfg = compose("train", overrides=["logger=csv", f"trainer={trainer}"])
    trainer, _, interrupt = make_trainer(cfg, tmp_path, [], "val/mse", "min")
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    trainer.strategy.save_checkpoint({"step": torch.tensor(3)}, interrupt.ckpt_path)
    assert hash_file(interrupt.ckpt_path).is_file()
    assert trainer.strategy.load_checkpoint(interrupt.ckpt_path)["step"] == 3


def test_a_flipped_weight_byte_is_refused_by_train_and_eval_and_the_run_is_untouched(run_dir):
    last = run_dir / "checkpoints" / "last.ckpt"
    member = flip_weight_byte(last)
    before = snapshot(run_dir)
    damaged = f"{last} is damaged (the CRC of {member} fails) and was not loaded: use "
    suggested = f"{(run_dir / 'checkpoints' / 'best.ckpt').resolve()} instead"
    where = run_dir.parent
    for command, args in (
        ("metalab-train", [*TINY, f"resume={last}", f"hydra.run.dir={where / 'resumed'}"]),
        ("metalab-eval", [f"ckpt_path={last}", f"hydra.run.dir={where / 'evaluated'}"]),
    ):
        out = run_cli(command, *args, cwd=where, timeout=300)
        assert out.returncode != 0, command
        assert "Traceback" not in out.stderr, out.stderr[-3000:]
        (line,) = error_lines(out.stderr)
        assert damaged in line and suggested in line, line
    assert snapshot(run_dir) == before  # results.json and checkpoints byte for byte


def test_a_valid_zip_whose_content_is_not_the_one_saved_is_refused(run_dir):
    last = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(last, weights_only=True)
    name = next(iter(ckpt["state_dict"]))
    ckpt["state_dict"][name] = ckpt["state_dict"][name] + 1.0
    torch.save(ckpt, last)  # a whole, readable archive: only the hash tells
    with zipfile.ZipFile(last) as archive:
        assert archive.testzip() is None
    for load in (load_checkpoint, AtomicCheckpointIO().load_checkpoint):
        with pytest.raises(CheckpointError) as error:
            load(last)
        message = str(error.value)
        assert message.startswith(f"{last} is damaged (its sha256 ")
        assert "written at save time in last.ckpt.sha256" in message and "\n" not in message


def test_a_checkpoint_without_a_hash_file_is_checked_by_crc_only(run_dir):
    """Checkpoints written before metalab wrote hashes still load; a bad CRC still refuses."""
    last, best = run_dir / "checkpoints" / "last.ckpt", run_dir / "checkpoints" / "best.ckpt"
    hash_file(last).unlink()
    assert load_checkpoint(last)["global_step"] == 4
    assert AtomicCheckpointIO().load_checkpoint(last)["global_step"] == 4
    hash_file(best).unlink()
    flip_weight_byte(best)
    with pytest.raises(
        CheckpointError, match=r"best.ckpt is damaged \(the CRC of .*use .*last.ckpt"
    ):
        load_checkpoint(best)


def save(folder: Path, name: str, value: float) -> Path:
    path = folder / name
    AtomicCheckpointIO().save_checkpoint({"w": torch.full((64,), value)}, path)
    return path


def test_the_suggestion_is_the_newest_good_checkpoint_of_the_run_or_none(tmp_path):
    run = tmp_path / "run"
    older = save(run / "attempt-1" / "checkpoints", "best.ckpt", 1.0)
    newer = save(run / "attempt-1" / "checkpoints", "last.ckpt", 2.0)
    damaged = save(run / "checkpoints", "last.ckpt", 3.0)
    damaged.write_bytes(damaged.read_bytes()[:-100])  # truncated: no central directory
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(damaged)
    assert "(not a whole zip archive:" in str(error.value)
    assert f"use {newer.resolve()} instead" in str(error.value)
    for good in (older, newer):
        flip_first_tensor_byte(good)
    with pytest.raises(CheckpointError, match="no other checkpoint of this run verifies"):
        load_checkpoint(damaged)


def test_a_kill_between_the_rename_and_the_hash_leaves_no_stale_hash(tmp_path, monkeypatch):
    path = save(tmp_path, "last.ckpt", 1.0)

    def killed(*args) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoints, "write_hash", killed)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, "last.ckpt", 2.0)
    assert not hash_file(path).exists()  # the new checkpoint, checked by CRC only
    assert load_checkpoint(path)["w"][0] == 2.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]


def test_a_copied_checkpoint_keeps_its_hash_and_a_removed_one_loses_it(tmp_path):
    source = save(tmp_path / "a", "last.ckpt", 1.0)
    target = tmp_path / "b" / "last.ckpt"
    target.parent.mkdir()
    copy_checkpoint(source, target)
    assert hash_file(target).read_bytes() == hash_file(source).read_bytes()
    assert checkpoint_damage(target) is None
    AtomicCheckpointIO().remove_checkpoint(target)
    assert list(target.parent.iterdir()) == []
