import os

import pytest
import torch


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _share_the_cores() -> None:
    """Under pytest-xdist, each worker gets its share of the cores for torch's intra-op threads,
    and so does every process a test starts (metalab-train in a subprocess reads
    OMP_NUM_THREADS): two workers with two threads each on two cores spin on each other's
    OpenMP barriers (test_meta_gradient's conv cases took 5x the CPU time). A value the user
    set is kept; tests of several threads set their own counts."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
    if workers < 1 or "OMP_NUM_THREADS" in os.environ:
        return
    share = max(1, _cores() // workers)
    os.environ["OMP_NUM_THREADS"] = str(share)
    torch.set_num_threads(share)


_share_the_cores()


@pytest.fixture
def one_thread():
    """Tiny tensors on a busy 2-core machine: OpenMP hand-offs between threads cost far more
    than the arithmetic (a 6 ms ResNet-12 forward took 700 ms with 2 threads), so run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
