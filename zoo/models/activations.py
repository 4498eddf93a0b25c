"""Activation functions by config name, with transformers' meanings: ``gelu`` is the exact erf form,
``gelu_new`` the tanh approximation every upstream TF ``modeling.py`` computes under the name "gelu"."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F

ACTIVATION_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "gelu_new": functools.partial(F.gelu, approximate="tanh"),
}
