"""The fused first block (native kernel) computes the composite block's function and gradient."""

from __future__ import annotations

import copy
import logging
import platform
import shutil
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch.func import vmap

from metalab import native
from metalab.models import build_model
from metalab.models.conv4 import ConvBlock
from metalab.models.layout import apply_memory_format
from metalab.models.single_backward import backward_once
from metalab.models.vectorised import vectorised
from metalab.native import fused_first_block

needs_kernel = pytest.mark.skipif(
    fused_first_block.library() is None, reason="no C compiler for the fused kernel"
)


def block(in_channels: int, channels: int, dtype=torch.float64, channels_last=False):
    torch.manual_seed(0)
    layer = ConvBlock(in_channels, channels, "batch").to(dtype)
    with torch.no_grad():  # away from the initial affine map, so every gradient counts
        layer[1].weight.uniform_(0.5, 1.5)
        layer[1].bias.uniform_(-0.5, 0.5)
    if channels_last:
        assert apply_memory_format(layer, "channels_last")
    return layer


def ran_fused(out: torch.Tensor) -> bool:
    node = out.grad_fn.next_functions[0][0]  # out = relu(pooled), NCHW: a copy between
    while type(node).__name__ == "CloneBackward0":
        node = node.next_functions[0][0]
    return type(node).__name__.startswith("_FoldedPool")


def value_and_gradients(layer, x, grad_out, fused: bool):
    with backward_once() if fused else torch.enable_grad():
        out = layer(x)
        assert ran_fused(out) == fused
        grads = torch.autograd.grad(out, list(layer.parameters()), grad_out)
    return out, grads


def assert_fused_matches_composite(layer, x, grad_out, value_tol, grad_rtol, grad_atol):
    """The fused block's value and parameter gradients against the composite block's; the
    fused gradients are returned."""
    reference, reference_grads = value_and_gradients(layer, x, grad_out, fused=False)
    out, grads = value_and_gradients(layer, x, grad_out, fused=True)
    assert out.shape == reference.shape
    assert out.is_contiguous() == reference.is_contiguous()
    torch.testing.assert_close(out, reference, rtol=value_tol, atol=value_tol)
    for ours, theirs in zip(grads, reference_grads, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=grad_rtol, atol=grad_atol)
    return grads


SHAPES = [  # in_channels, out_channels, side: one-channel Omniglot, odd sides, RGB patches
    (1, 64, 28),
    (1, 32, 15),
    (3, 64, 12),
    (2, 48, 9),
]


@needs_kernel
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels-last"])
@pytest.mark.parametrize(("in_channels", "channels", "side"), SHAPES)
def test_fused_block_equals_the_composite_block_in_float64(
    in_channels, channels, side, channels_last
):
    layer = block(in_channels, channels, channels_last=channels_last)
    x = torch.rand(6, in_channels, side, side, dtype=torch.float64)
    grad_out = torch.randn(6, channels, side // 2, side // 2, dtype=torch.float64)
    grads = assert_fused_matches_composite(layer, x, grad_out, 1e-12, 1e-10, 1e-12)
    assert torch.count_nonzero(grads[1]) == 0  # the convolution's bias cancels exactly


def near_ties(layer: ConvBlock, x: torch.Tensor, gap: float) -> torch.Tensor:
    """The pooling windows [N, C, H/2, W/2] whose two largest values, or whose largest and
    the ReLU's 0, are within ``gap`` of each other in the exact (float64) block."""
    with torch.no_grad():
        z = layer[1](layer[0](x))
    images, channels, height, width = z.shape
    windows = z[..., : height // 2 * 2, : width // 2 * 2].unfold(2, 2, 2).unfold(3, 2, 2)
    top = windows.reshape(images, channels, height // 2, width // 2, 4).topk(2, dim=-1).values
    return (top[..., 0] - top[..., 1] <= gap) | (top[..., 0].abs() <= gap)


@needs_kernel
@pytest.mark.parametrize("seed", [3, 33])  # 33: a near-tie that flips in float32
def test_fused_block_in_float32_agrees_to_rounding(seed):
    """Against the float64 block, as the relative error of each gradient as a whole, away from
    near-ties: in float32 a window whose two largest values are within rounding of each other
    may send its gradient to either position (in the composite block too; at seed 33 one
    such window moved the convolution's gradient by 1.7e-3), so such windows get no gradient
    from above. 120 seeds and thread counts stayed under 1e-6 so (rounding level)."""
    layer = block(1, 64, torch.float32, channels_last=True)
    exact_layer = copy.deepcopy(layer).double()
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(20, 1, 28, 28, generator=generator)
    grad_out = torch.randn(20, 64, 14, 14, generator=generator)
    ties = near_ties(exact_layer, x.double(), gap=1e-4)
    assert ties.float().mean() < 1e-3  # the comparison still covers nearly every window
    grad_out = grad_out.masked_fill(ties, 0.0)
    out, grads = value_and_gradients(layer, x, grad_out, fused=True)
    exact, exact_grads = value_and_gradients(exact_layer, x.double(), grad_out.double(), False)
    torch.testing.assert_close(out.double(), exact, rtol=1e-5, atol=1e-5)
    for ours, theirs in zip(grads, exact_grads, strict=True):
        assert (ours.double() - theirs).norm() <= 1e-5 * max(theirs.norm().item(), 1e-12)


@needs_kernel
def test_ties_go_to_the_first_position_of_the_window_as_in_max_pool2d():
    """A blank image makes the four products of an inner window equal: the gradient must
    reach the same (first) position as max_pool2d's."""
    layer = block(1, 32)
    x = torch.zeros(3, 1, 8, 8, dtype=torch.float64)
    x[:, :, 2:6, 2:6] = 1.0
    grad_out = torch.randn(3, 32, 4, 4, dtype=torch.float64)
    assert_fused_matches_composite(layer, x, grad_out, 1e-12, 1e-10, 1e-12)


@needs_kernel
def test_patch_moments_equal_those_of_the_unfolded_patches():
    x = torch.rand(5, 3, 11, 13, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    mean, covariance = fused_first_block.patch_moments(x)
    rows = F.unfold(x, 3, padding=1).transpose(1, 2).reshape(-1, 27)
    centred = rows - rows.mean(0)
    torch.testing.assert_close(mean, rows.mean(0), rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(covariance, centred.T @ centred / len(rows), rtol=1e-12, atol=1e-15)


@needs_kernel
def test_where_the_fused_path_applies():
    layer = block(1, 32)
    conv = layer[0]
    x = torch.rand(4, 1, 10, 10, dtype=torch.float64)

    def why(images, the_conv=conv):
        """The path ``first_block_path`` answers, and the reason the kernel gives."""
        reason = fused_first_block.why_composite(images, the_conv)
        assert native.first_block_path(images, the_conv) == ("composite" if reason else "native")
        return reason

    assert "differentiated twice" in why(x)
    with torch.no_grad():
        assert why(x) == ""
    with backward_once():
        assert why(x) == ""
        assert "want a gradient" in why(x.clone().requires_grad_())
        assert "torch.float32 images with torch.float64 weights" in why(x.float())
        assert "24 output channels, not a multiple of 16" in why(x, block(1, 24)[0])
        seen = []

        def under_vmap(images):
            seen.append(why(images))
            return images.sum()

        vmap(under_vmap)(x[None])  # vectorised() or not: a batched tensor has no data here
        with vectorised():
            vmap(under_vmap)(x[None])
        assert seen == ["under vmap or another torch.func transform"] * 2


@needs_kernel
def test_the_record_counts_each_pass_with_its_path():
    """What results.json's "kernels" says: native where any pass ran the kernel, with the
    count of each path and why the others ran composite."""
    layer = block(1, 32)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    native.reset()
    assert native.record() == {
        "first_block": "composite",
        "reason": native.NO_FIRST_BLOCK,
        "passes": {"native": 0, "composite": 0},
    }
    layer(x)  # a graph that may be differentiated twice: composite
    assert native.record()["first_block"] == "composite"
    assert native.record()["reason"].endswith("a graph that may be differentiated twice (1)")
    with torch.no_grad():
        layer(x)
        layer(x)
    record = native.record()
    assert record["first_block"] == "native"
    assert record["passes"] == {"native": 2, "composite": 1}
    assert record["reason"].startswith("the native kernel ran 2 of 3 first-block passes")
    build_model(SimpleNamespace(name="mlp", hidden=[4]), (1,), 1)  # a new run's model
    assert native.record()["passes"] == {"native": 0, "composite": 0}


@needs_kernel
def test_a_second_backward_through_the_fused_block_is_refused():
    layer = block(1, 32)
    x = torch.rand(4, 1, 8, 8, dtype=torch.float64)
    with backward_once():
        out = layer(x)
        assert ran_fused(out)
    with pytest.raises(RuntimeError, match="one backward pass.*create_graph=True"):
        torch.autograd.grad(out.square().sum(), list(layer.parameters()), create_graph=True)


def test_without_a_compiler_the_composite_path_runs(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    monkeypatch.setattr(fused_first_block, "fallback_folders", lambda _: [tmp_path])
    fused_first_block._library.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, "metalab.native.fused_first_block"):
            assert fused_first_block.library() is None
        assert "composite path runs instead" in caplog.text
        layer = block(1, 32)
        x = torch.rand(2, 1, 8, 8, dtype=torch.float64)
        native.reset()
        with backward_once():
            assert "did not build" in fused_first_block.why_composite(x, layer[0])
            out = layer(x)
        assert out.shape == (2, 32, 4, 4) and not ran_fused(out)
        assert native.record()["first_block"] == "composite"
        assert "the native kernel did not build" in native.record()["reason"]
    finally:
        fused_first_block._library.cache_clear()


@needs_kernel
@pytest.mark.skipif(platform.machine() != "x86_64", reason="-mno-avx is an x86 flag")
@pytest.mark.parametrize(("in_channels", "channels", "side"), [SHAPES[0], SHAPES[3]])
def test_the_kernel_in_narrower_vectors_is_exact_too(
    monkeypatch, tmp_path, in_channels, channels, side
):
    """The kernel's vectors are one register of the machine's widest (64, 32 or 16 bytes);
    built without AVX (16-byte vectors: 4 floats, 2 doubles a vector) it computes the same."""
    compiler = tmp_path / "cc-without-avx"
    compiler.write_text(f'#!/bin/sh\nexec {shutil.which("cc") or "gcc"} "$@" -mno-avx\n')
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    monkeypatch.setattr(fused_first_block, "fallback_folders", lambda _: [tmp_path])
    fused_first_block._library.cache_clear()
    try:
        assert fused_first_block.library() is not None
        assert list((tmp_path / "kernels").glob("fused_first_block-*.so"))
        layer = block(in_channels, channels)
        x = torch.rand(6, in_channels, side, side, dtype=torch.float64)
        grad_out = torch.randn(6, channels, side // 2, side // 2, dtype=torch.float64)
        assert_fused_matches_composite(layer, x, grad_out, 1e-12, 1e-10, 1e-12)
    finally:
        fused_first_block._library.cache_clear()


def test_the_kernel_can_be_switched_off(monkeypatch):
    monkeypatch.setenv("METALAB_NATIVE_KERNELS", "0")
    fused_first_block._library.cache_clear()
    try:
        assert fused_first_block.library() is None
        assert fused_first_block.unavailable() == "switched off (METALAB_NATIVE_KERNELS=0)"
    finally:
        fused_first_block._library.cache_clear()
