"""benchmarks/first_order_direction.py measures what it says: the cosine between first- and
second-order MAML's meta-gradients tends to 1 as the inner step shrinks (the (I - alpha H)
factor FOMAML drops tends to I) and falls as the step grows."""

from __future__ import annotations

import importlib.util
import sys

from tests.helpers.configs import compose_train
from tests.helpers.paths import BENCHMARKS


def load_script():
    spec = importlib.util.spec_from_file_location(
        "first_order_direction", BENCHMARKS / "first_order_direction.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_first_and_second_order_directions_meet_as_the_inner_step_shrinks():
    cfg = compose_train("algorithm.meta_batch=4", "seed=0")
    rows = load_script().compare_directions(cfg, None, [1e-6, 0.01, 0.5], batches=2)
    (tiny, cos_tiny, _, ratio_tiny), _, (big, cos_big, smallest, _) = rows
    assert cos_tiny > 1 - 1e-6 and abs(ratio_tiny - 1) < 1e-4
    assert cos_big < rows[1][1] < cos_tiny
    assert -1 <= smallest <= cos_big
