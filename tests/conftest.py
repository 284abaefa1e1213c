import sys
from pathlib import Path

# Lets tests import the shared helpers in this folder (reference.py) by name.
sys.path.insert(0, str(Path(__file__).parent))

import pytest  # noqa: E402
import torch  # noqa: E402


@pytest.fixture
def one_thread():
    """Tiny tensors on a busy 2-core machine: OpenMP hand-offs between threads cost far more
    than the arithmetic (a 6 ms ResNet-12 forward took 700 ms with 2 threads), so run on one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
