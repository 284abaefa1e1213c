"""First-order MAML: MAML with the second derivatives through the inner loop dropped.

The meta-gradient is the query-loss gradient at the adapted parameters (Finn et al. 2017,
section 5.2); it costs one backward pass less per inner step.
"""

from __future__ import annotations

from metalab.algorithms.maml import MAML
from metalab.errors import ConfigError


class FOMAML(MAML):
    def __init__(self, *args, first_order: bool = True, **kwargs) -> None:
        if not first_order:
            raise ConfigError(
                "algorithm=fomaml is first order by definition, so algorithm.first_order=false "
                "makes no sense: use algorithm=maml for second-order MAML."
            )
        super().__init__(*args, first_order=True, **kwargs)
