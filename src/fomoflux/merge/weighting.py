"""Weightings of offline (one-shot) merges: how much each of n checkpoints counts, by its position in the stream.

With i = 1..n the position (1 the earliest), the unnormalised weight of checkpoint i is, as the reference's
``offline_merge.py`` defines it (its ``interpolation_weighting``; null there is ``uniform`` here)

    uniform 1    linear i    sqrt √i    quadratic i²    cubic i³    fifth i⁵    tenth i¹⁰
    exp 2^(i − 1)    log ln(1 + i)

and the weights are normalised to sum to 1, so later checkpoints weigh more (uniform aside). ``reverse=True`` is the
reference's ``reverse_<scheme>``: the list reversed, checkpoint i gets the weight of position n + 1 − i. ``exp`` is
computed as 2^(i − n), the same weights after normalisation, which stays finite for any n.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from fomoflux.errors import ConfigError

__all__ = ["WEIGHTINGS", "offline_weights"]

# Unnormalised weight of position i (1-based) among n.
WEIGHTINGS: dict[str, Callable[[int, int], float]] = {
    "uniform": lambda i, n: 1.0,
    "linear": lambda i, n: float(i),
    "sqrt": lambda i, n: math.sqrt(i),
    "quadratic": lambda i, n: float(i) ** 2,
    "cubic": lambda i, n: float(i) ** 3,
    "fifth": lambda i, n: float(i) ** 5,
    "tenth": lambda i, n: float(i) ** 10,
    "exp": lambda i, n: 2.0 ** (i - n),
    "log": lambda i, n: math.log1p(i),
}


def offline_weights(n: int, scheme: str, reverse: bool = False) -> list[float]:
    """The n weights of ``scheme`` (see module doc), summing to 1; ConfigError on an unknown scheme or n < 1."""
    if scheme not in WEIGHTINGS:
        raise ConfigError(f"unknown merge weighting {scheme!r}; known: {', '.join(sorted(WEIGHTINGS))}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"merge weighting {scheme!r}: the number of checkpoints must be an int >= 1, got {n!r}")
    if not isinstance(reverse, bool):
        raise ConfigError(f"merge weighting {scheme!r}: 'reverse' must be true/false, got {reverse!r}")
    raw = [WEIGHTINGS[scheme](i, n) for i in range(1, n + 1)]
    total = math.fsum(raw)
    weights = [w / total for w in raw]
    return weights[::-1] if reverse else weights
