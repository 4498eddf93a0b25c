"""Comparing float32 results the way they can be compared on any machine: within a number of ulps.

Vectorised kernels, and the math libraries behind them, round differently per CPU and per build: torch's float32
``sqrt`` on CPU, for one, is within 1 ulp of the correctly rounded result, not always equal to it, and a
reduction sums in whatever order its kernel chose. A test that demands bit-identical results from two different
implementations depends on the CPU that runs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def ulps_apart(got: Any, want: Any, scale: Any = None) -> np.ndarray:
    """|got − want| in float32 ulps of the larger magnitude of the two (and of ``scale``, where given),
    element by element; 0 where both are the same number, infinity, or both NaN.

    ``scale`` is for results of a cancellation (a − b with a ≈ b): rounding a and b by one ulp each moves the
    small result by many of *its* ulps, so such a result is judged in ulps of the operands' magnitude.
    """
    a, b = np.asarray(got, np.float32), np.asarray(want, np.float32)
    magnitude = np.maximum(np.abs(a), np.abs(b))
    if scale is not None:
        magnitude = np.maximum(magnitude, np.abs(np.asarray(scale, np.float32)))
    with np.errstate(invalid="ignore"):
        apart = np.abs(a.astype(np.float64) - b.astype(np.float64)) / np.spacing(magnitude).astype(np.float64)
    same = (a == b) | (np.isnan(a) & np.isnan(b))
    return np.where(same, 0.0, np.where(np.isnan(apart), np.inf, apart))


def assert_ulps(got: Any, want: Any, ulps: float, what: str = "", *, scale: Any = None) -> None:
    """Assert ``got`` is within ``ulps`` float32 ulps of ``want`` everywhere (see :func:`ulps_apart`); the
    message names the worst element: its index, both values and how far apart they are."""
    got, want = np.asarray(got, np.float32), np.asarray(want, np.float32)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if got.size == 0:
        return
    apart = ulps_apart(got, want, scale)
    worst = np.unravel_index(int(np.argmax(apart)), apart.shape)
    assert apart[worst] <= ulps, (
        f"{what}: {int((apart > ulps).sum())} of {apart.size} elements more than {ulps} ulps apart; worst at "
        f"{tuple(int(i) for i in worst)}: {got[worst]!r} vs {want[worst]!r} ({float(apart[worst]):.3g} ulps)")
