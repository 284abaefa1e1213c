import pytest
import torch


@pytest.fixture
def one_thread():
    """Tiny tensors on a busy 2-core machine: OpenMP hand-offs between threads cost far more
    than the arithmetic (a 6 ms ResNet-12 forward took 700 ms with 2 threads), so run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
