"""A first block's folded convolution + batch norm and its 2x2 max-pooling in one native pass.

Why: after the fold (``folded_norm``) the first block of Omniglot's Conv-4 still writes a
full-resolution output (75x64x28x28 floats, 15 MB per task), pools it with int64 indices,
and its backward zero-fills a gradient of that size and scatters into it: about a quarter
of hybrid's query passes on two threads, all of it memory traffic (benchmarks/NOTES.md).
A small C kernel (``fused_first_block.c``) computes each pooled value straight from the
image: the largest of its window's four patch products, kept with its window position in
one byte; the backward sums each chosen patch times the gradient. Nothing full-resolution
is written.

It runs where the forward's graph gets one backward or none (``single_backward``, no grad)
and not under vmap; elsewhere, and where no C compiler is found, the composite path runs
the same function. The kernel is compiled on first use (about a second) with the machine's C
compiler (``$CC``, else ``cc``; ``-O3 -march=native``) and kept in the ``kernels`` folder of
metalab's cache (``$METALAB_CACHE``, else ``~/.cache/metalab``; the temp folder where that
cannot be written), named by a hash of the source, the flags and the CPU's features.
``METALAB_NATIVE_KERNELS=0`` turns it off. ``metalab.native.first_block_path`` asks it
whether a pass may run here, and keeps the answer for results.json.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import cache
from pathlib import Path

import torch
from torch import nn

from metalab.data.cache import default_cache_folder, fallback_folders
from metalab.models.folded_norm import normalising_map
from metalab.models.single_backward import is_backward_once
from metalab.models.vectorised import is_vectorised

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_suffix(".c")
FLAGS = ("-O3", "-march=native", "-shared", "-fPIC")
_TYPES = {torch.float32: "float", torch.float64: "double"}
LANES = 16  # channels in multiples of this: every vector width in fused_first_block.c divides it
_lock = threading.Lock()


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line for line in cpuinfo if line.startswith("flags")), "")
    except OSError:
        return platform.processor()


def _compile(compiler: str, target: Path) -> None:
    """Compile to a temporary name and move it into place, so that processes compiling at
    the same time (a multirun, DDP ranks) never load a half-written library."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        built = Path(scratch) / target.name
        subprocess.run(
            [compiler, *FLAGS, "-o", str(built), str(SOURCE)],
            check=True,
            capture_output=True,
            timeout=120,
        )
        os.replace(built, target)


def _built(compiler: str, name: str) -> ctypes.CDLL:
    """The library from the first cache folder that has it or can be written (a compiler
    error is raised at once; a folder's error only when no folder worked)."""
    error: OSError | None = None
    for folder in fallback_folders(default_cache_folder()):
        target = folder / "kernels" / name
        try:
            if not target.exists():
                _compile(compiler, target)
            return ctypes.CDLL(str(target))
        except OSError as failed:
            error = failed
    assert error is not None
    raise error


@cache
def _library() -> tuple[ctypes.CDLL | None, str]:
    """The compiled kernel and "", or None and why not (switched off, no compiler, or it
    failed: logged once)."""
    if os.environ.get("METALAB_NATIVE_KERNELS", "1") == "0":
        return None, "switched off (METALAB_NATIVE_KERNELS=0)"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        log.info("no C compiler found: the first Conv-4 block runs without its fused kernel")
        return None, "no C compiler found ($CC, cc or gcc) to build the native kernel"
    key = hashlib.sha256(
        SOURCE.read_bytes() + " ".join(FLAGS).encode() + _cpu_flags().encode()
    ).hexdigest()[:16]
    name = f"fused_first_block-{platform.machine()}-{key}.so"
    try:
        library = _built(compiler, name)
    except (OSError, subprocess.SubprocessError) as error:
        detail = getattr(error, "stderr", b"") or b""
        log.warning(
            "the fused first-block kernel did not build (%s%s); the composite path runs "
            "instead. Set METALAB_NATIVE_KERNELS=0 to skip trying.",
            error,
            ": " + detail.decode(errors="replace")[-500:] if detail else "",
        )
        return None, f"the native kernel did not build ({error})"
    pointer, size = ctypes.c_void_p, ctypes.c_int64
    for name in _TYPES.values():
        getattr(library, f"patch_stats_{name}").argtypes = [pointer] + [size] * 4 + [pointer] * 2
        getattr(library, f"forward_{name}").argtypes = [pointer] * 4 + [size] * 5
        getattr(library, f"backward_{name}").argtypes = [pointer] * 4 + [size] * 5
    return library, ""


def library() -> ctypes.CDLL | None:
    """The compiled kernel, or None where it cannot run (``unavailable`` says why)."""
    return _loaded()[0]


def unavailable() -> str:
    """Why the kernel cannot run on this machine, or "" where it can."""
    return _loaded()[1]


def _loaded() -> tuple[ctypes.CDLL | None, str]:
    with _lock:  # one compile, even when worker threads ask at once
        return _library()


def patch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (biased) covariance of the 3x3 zero-padded patches of ``x``, summed in float64.

    Constants for autograd: ``x`` is data here (``why_composite`` requires it).
    """
    images, channels, height, width = x.shape
    patch = channels * 9
    total = torch.empty(patch, dtype=torch.float64)
    outer = torch.empty(patch, patch, dtype=torch.float64)
    getattr(library(), f"patch_stats_{_TYPES[x.dtype]}")(
        x.data_ptr(), images, channels, height, width, total.data_ptr(), outer.data_ptr()
    )
    count = images * height * width
    mean = total / count
    covariance = outer / count - torch.outer(mean, mean)
    return mean.to(x.dtype), covariance.to(x.dtype)


class _FoldedPool(torch.autograd.Function):
    """``max_pool2d(patches(x) @ map, 2)`` with the gradient for ``map`` only."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, the_map: torch.Tensor) -> torch.Tensor:
        images, channels, height, width = x.shape
        out_channels = the_map.shape[1]
        the_map = the_map.contiguous()
        shape = (images, height // 2, width // 2, out_channels)
        pooled = torch.empty(shape, dtype=x.dtype)
        argmax = torch.empty(shape, dtype=torch.uint8)
        getattr(library(), f"forward_{_TYPES[x.dtype]}")(
            x.data_ptr(),
            the_map.data_ptr(),
            pooled.data_ptr(),
            argmax.data_ptr(),
            images,
            channels,
            height,
            width,
            out_channels,
        )
        ctx.save_for_backward(x, argmax)
        ctx.mark_non_differentiable(argmax)
        return pooled.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        if torch.is_grad_enabled():  # create_graph: a second backward would miss this path
            raise RuntimeError(
                "the fused first Conv-4 block has one backward pass, but a graph for a second "
                "one was asked for (create_graph=True): build this forward outside "
                "metalab.models.single_backward.backward_once()."
            )
        x, argmax = ctx.saved_tensors
        images, channels, height, width = x.shape
        out_channels = argmax.shape[-1]
        grad = grad.permute(0, 2, 3, 1).contiguous()
        grad_map = torch.empty(channels * 9 + 1, out_channels, dtype=x.dtype)
        getattr(library(), f"backward_{_TYPES[x.dtype]}")(
            x.data_ptr(),
            argmax.data_ptr(),
            grad.data_ptr(),
            grad_map.data_ptr(),
            images,
            channels,
            height,
            width,
            out_channels,
        )
        return None, grad_map


def _transformed(x: torch.Tensor) -> bool:
    """Whether ``x`` is a ``torch.func`` wrapper (vmap, grad), which has no data pointer."""
    return torch._C._functorch.is_functorch_wrapped_tensor(x)


def why_composite(x: torch.Tensor, conv: nn.Conv2d) -> str:
    """Why ``folded_conv_pool`` may not run on ``x``, or "" where it may: one backward or
    none, not under vmap, a CPU float tensor of data (no gradient wanted for it), a 3x3
    convolution that keeps the size, channels in multiples of ``LANES``, a built kernel.
    The conditions are tested in this order; the kernel is built only when all others hold."""
    if is_vectorised() or _transformed(x):
        return "under vmap or another torch.func transform"
    if not (is_backward_once() or not torch.is_grad_enabled()):
        return "a graph that may be differentiated twice"
    if torch.is_autocast_enabled("cpu"):
        return "under CPU autocast"
    if x.device.type != "cpu":
        return f"on {x.device.type}, not the CPU"
    if x.dtype not in _TYPES or conv.weight.dtype != x.dtype:
        return f"{x.dtype} images with {conv.weight.dtype} weights, not both float32 or float64"
    if conv.out_channels % LANES != 0:
        return f"{conv.out_channels} output channels, not a multiple of {LANES}"
    if x.requires_grad:
        return "images that want a gradient"
    if x.dim() != 4 or min(x.shape[-2:]) < 2:
        return "not a batch of images of at least 2x2"
    if (conv.kernel_size, conv.stride, conv.padding, conv.dilation) != (
        (3, 3),
        (1, 1),
        (1, 1),
        (1, 1),
    ):
        return "not a 3x3 convolution with stride 1 and padding 1"
    return unavailable() if library() is None else ""


def folded_conv_pool(x: torch.Tensor, conv: nn.Conv2d, norm: nn.Module) -> torch.Tensor:
    """``max_pool2d(norm(conv(x)), 2)`` for a ``BatchStatNorm`` ``norm``, where
    ``why_composite`` finds no reason against it."""
    x = x.contiguous()
    pooled = _FoldedPool.apply(x, normalising_map(*patch_moments(x), conv, norm))
    if not getattr(conv, "channels_last", True):
        pooled = pooled.contiguous()
    return pooled
