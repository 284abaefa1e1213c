"""What a CPU-second buys on this machine: one thread's float32 matrix-multiply rate.

Budgets are CPU seconds (``trainer.max_cpu_seconds``) so that runs sharing a machine stay
comparable; between machines they are not (a 2-core Zen 1 EPYC ran MAML's Omniglot preset at
about a quarter of the steps per CPU-second of another 2-core EPYC). Every run records this rate in
its ``results.json`` so that ``metalab-compare`` can say when its CPU times came from
machines of different speed."""

from __future__ import annotations

import time

import torch

SIZE = 512  # ~0.27 GFLOP a product: at full speed from here up on the CPUs measured
REPEATS = 7


def matmul_gflops(size: int = SIZE, repeats: int = REPEATS) -> float:
    """GFLOP/s of one thread multiplying two ``size`` x ``size`` float32 matrices, the best
    of ``repeats`` products after a warm-up. A process on the same core (or its hyperthread
    sibling) lowers it, as it lowers what the run's CPU seconds buy: measured beside a second
    one-thread run on a 2-vCPU machine, 15-21 GFLOP/s against 31 alone. Takes about 20-100
    ms; the thread count is restored and no random number is drawn, so a run's
    reproducibility is untouched."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = torch.full((size, size), 0.5)
        b = torch.full((size, size), 0.25)
        torch.mm(a, b)  # warm-up: the first product allocates and picks its kernel
        best = float("inf")
        for _ in range(repeats):
            started = time.perf_counter()
            torch.mm(a, b)
            best = min(best, time.perf_counter() - started)
    finally:
        torch.set_num_threads(threads)
    return 2 * size**3 / max(best, 1e-9) / 1e9
