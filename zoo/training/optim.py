"""The optimizers and learning-rate schedules of training, in PyTorch.

Continuing to pretrain an upstream checkpoint should change as little as possible from how it was trained, so
:class:`Lamb` (google-research/albert; ``variant="brightmart"``: brightmart/albert_zh, trust ratio on every
variable), :class:`AdamWeightDecay` (google-research/bert), :func:`upstream_schedule` and
:func:`clip_by_global_norm` reproduce the TF1 code's update rules float32 operation by float32 operation — upstream
has **no bias correction**, which no library optimizer reproduces (docs/pretraining.md says why not a library
LAMB). Weights agree with TF's to a few float32 ulps per step, not bitwise: √v and the norms round as the device's
kernels do (tests/test_training_optim.py). Fine-tuning uses torch's AdamW (with bias correction) and
:func:`linear_schedule`. :func:`param_groups` decides decay and trust ratio by parameter name, as upstream matched
TF variable names (``LayerNorm``, ``layer_norm``, ``bias``, plus zoo's ``*norm`` modules).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from zoo.errors import UnsupportedError, UsageError

log = logging.getLogger("zoo.training")

#: Upstream hyperparameters (``create_optimizer`` in all three repositories).
BETAS = (0.9, 0.999)
EPSILON = 1e-6
WEIGHT_DECAY = 0.01
#: Upstream's ``exclude_from_weight_decay`` (google-research/bert, albert and brightmart alike).
UPSTREAM_EXCLUDES = ("LayerNorm", "layer_norm", "bias")
#: zoo's canonical LayerNorm parameters: ``norm.weight``/``.bias`` or ``<something>_norm.weight``/``.bias``.
ZOO_LAYER_NORM = r"(?:^|\.)(?:\w+_)?norm\.(?:weight|bias)$"
#: The exclusion patterns :func:`param_groups` uses by default: upstream's, plus zoo's LayerNorm names.
EXCLUDE_FROM_WEIGHT_DECAY = (*UPSTREAM_EXCLUDES, ZOO_LAYER_NORM)

Variant = Literal["google", "brightmart"]
ParamsLike = nn.Module | Iterable[torch.Tensor] | Iterable[tuple[str, torch.Tensor]] | Iterable[dict[str, Any]]


def is_excluded(name: str, patterns: Sequence[str] = EXCLUDE_FROM_WEIGHT_DECAY) -> bool:
    """Whether ``name`` matches any pattern (``re.search``, as upstream's ``_do_use_weight_decay``)."""
    return any(re.search(pattern, name) is not None for pattern in patterns)


def param_groups(params: nn.Module | Iterable[tuple[str, torch.Tensor]], *,
                 weight_decay: float = WEIGHT_DECAY,
                 exclude_from_weight_decay: Sequence[str] = EXCLUDE_FROM_WEIGHT_DECAY,
                 exclude_from_layer_adaptation: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """Parameter groups deciding, by name, which parameters get weight decay and LAMB's trust ratio.

    As upstream: a parameter whose name matches ``exclude_from_weight_decay`` gets no decay; layer adaptation
    excludes default to the weight-decay excludes (google-research/albert ``LAMBOptimizer.__init__``); a
    weight decay of 0 decays nothing but still excludes from adaptation. Only trainable parameters are
    included (upstream optimizes ``tf.trainable_variables()``); a parameter shared by several modules
    appears once. Each group carries ``param_names`` so saved optimizer states say what they hold.
    """
    named = params.named_parameters() if isinstance(params, nn.Module) else params
    adapt_excludes = exclude_from_layer_adaptation or exclude_from_weight_decay
    groups: dict[tuple[bool, bool], dict[str, Any]] = {}
    seen: set[int] = set()
    for name, param in named:
        if not isinstance(name, str) or not isinstance(param, torch.Tensor):
            raise UsageError("param_groups needs (name, parameter) pairs, e.g. model.named_parameters()")
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        decay = bool(weight_decay) and not is_excluded(name, exclude_from_weight_decay)
        adapt = not is_excluded(name, adapt_excludes)
        group = groups.setdefault((decay, adapt), {
            "params": [], "param_names": [], "weight_decay": weight_decay if decay else 0.0,
            "layer_adaptation": adapt,
        })
        group["params"].append(param)
        group["param_names"].append(name)
    if not groups:
        raise UsageError("no trainable parameters to optimize")
    return [groups[key] for key in sorted(groups, reverse=True)]


def _is_named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                               for item in items)


class _UpstreamAdam(torch.optim.Optimizer):
    """The moment updates shared by upstream's AdamWeightDecayOptimizer and both LAMBs (no bias correction).

    Parameters are updated one by one with plain tensor operations (no foreach or fused kernels), so CPU and
    CUDA run the same sequence of operations and each elementwise step rounds once, as TF's kernels do.
    """

    _adapt = False

    def __init__(self, params: ParamsLike, lr: float, *, betas: tuple[float, float] = BETAS,
                 eps: float = EPSILON, weight_decay: float = WEIGHT_DECAY) -> None:
        if not (isinstance(lr, (int, float)) and lr >= 0 and math.isfinite(lr)):
            raise UsageError(f"learning rate must be a finite number >= 0, got {lr!r}")
        if not all(0.0 <= beta < 1.0 for beta in betas) or len(betas) != 2:
            raise UsageError(f"betas must be two numbers in [0, 1), got {betas!r}")
        if not eps >= 0:
            raise UsageError(f"eps must be >= 0, got {eps!r}")
        if not weight_decay >= 0:
            raise UsageError(f"weight_decay must be >= 0, got {weight_decay!r}")
        items: list[Any] = (param_groups(params, weight_decay=weight_decay) if isinstance(params, nn.Module)
                            else list(params))
        if _is_named(items):
            items = param_groups(items, weight_decay=weight_decay)
        defaults = {"lr": float(lr), "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "layer_adaptation": True}
        super().__init__(items, defaults)
        for group in self.param_groups:
            for param in group["params"]:
                if param.dtype not in (torch.float32, torch.float64):
                    raise UnsupportedError(
                        f"{type(self).__name__} updates float32 (or float64) parameters, got {param.dtype}",
                        hint="keep float32 master weights and run the model under torch.autocast "
                             "for mixed precision, as upstream kept float32 variables")

    def _trust_ratio(self, group: dict[str, Any], param: torch.Tensor,
                     update: torch.Tensor) -> torch.Tensor | None:
        return None

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One update of every parameter that has a gradient (upstream skips variables without one)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = float(group["lr"]), group["eps"], group["weight_decay"]
            for param in group["params"]:
                grad = param.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise UnsupportedError(f"{type(self).__name__} does not support sparse gradients",
                                           hint="use dense embeddings (nn.Embedding(sparse=False))")
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                # separate multiplies and adds, each rounded, as upstream's tf.multiply(...) + tf.multiply(...)
                m.mul_(beta1).add_(grad * (1.0 - beta1))
                v.mul_(beta2).add_(grad.square().mul_(1.0 - beta2))
                update = m / v.sqrt().add_(eps)
                if weight_decay:
                    update.add_(param * weight_decay)
                ratio = self._trust_ratio(group, param, update)
                update.mul_(lr if ratio is None else ratio * lr)
                param.sub_(update)
                state["step"] += 1
        return loss


class AdamWeightDecay(_UpstreamAdam):
    """google-research/bert's ``AdamWeightDecayOptimizer``: Adam moments without bias correction, plus
    decoupled weight decay ``wd·w`` added to the update before the learning rate scales it.

    ``params`` may be a module or ``named_parameters()`` (grouped by :func:`param_groups`, upstream's
    exclusions), or plain parameters / groups (then ``weight_decay`` applies to every parameter of a group
    that does not set its own, and the caller decides the exclusions).
    """


class Lamb(_UpstreamAdam):
    """LAMB as in google-research/albert ``lamb_optimizer.py`` (``variant="google"``, the default): the
    AdamWeightDecay update scaled by the trust ratio ‖w‖/‖u‖ (1 if either norm is 0), for every parameter
    of a group with ``layer_adaptation`` true — :func:`param_groups` sets it false for the LayerNorm and
    bias parameters, which then take the plain AdamWeightDecay step.

    ``variant="brightmart"`` is brightmart/albert_zh's ``optimization.LAMBOptimizer``: the same update, but
    the trust ratio applies to every parameter regardless of ``layer_adaptation``; weight decay exclusions
    are the same.
    """

    def __init__(self, params: ParamsLike, lr: float, *, betas: tuple[float, float] = BETAS,
                 eps: float = EPSILON, weight_decay: float = WEIGHT_DECAY, variant: Variant = "google") -> None:
        if variant not in ("google", "brightmart"):
            raise UsageError(f"unknown LAMB variant {variant!r}", hint="use 'google' or 'brightmart'")
        self.variant = variant
        super().__init__(params, lr, betas=betas, eps=eps, weight_decay=weight_decay)

    def _trust_ratio(self, group: dict[str, Any], param: torch.Tensor,
                     update: torch.Tensor) -> torch.Tensor | None:
        if self.variant == "google" and not group["layer_adaptation"]:
            return None
        w_norm = torch.linalg.vector_norm(param)
        u_norm = torch.linalg.vector_norm(update)
        # computed on the device, without a host sync; w/u where a norm is 0 is discarded by the where
        return torch.where(w_norm > 0, torch.where(u_norm > 0, w_norm / u_norm, 1.0), 1.0)


# ------------------------------------------------------------------------------------------ schedule


def _check_schedule(init_lr: float, num_train_steps: int, num_warmup_steps: int) -> None:
    if num_train_steps <= 0:
        raise UsageError(f"num_train_steps must be > 0, got {num_train_steps}",
                         hint="the learning rate decays to 0 at num_train_steps")
    if num_warmup_steps < 0:
        raise UsageError(f"num_warmup_steps must be >= 0, got {num_warmup_steps}")
    if not (init_lr >= 0 and math.isfinite(init_lr)):
        raise UsageError(f"learning rate must be a finite number >= 0, got {init_lr!r}")


def learning_rate(step: int, *, init_lr: float, num_train_steps: int, num_warmup_steps: int = 0,
                  poly_power: float = 1.0, start_warmup_step: int = 0) -> float:
    """Upstream ``create_optimizer``'s learning rate for the update made at global step ``step`` (0-based,
    read before the step increments it), computed in float32 as TF does.

    * decay: ``init_lr · (1 − min(step, num_train_steps)/num_train_steps)^poly_power`` — counted from step 0,
      not from the end of warmup, and 0 from ``num_train_steps`` on;
    * warmup (if ``num_warmup_steps``): while ``step − start_warmup_step < num_warmup_steps`` the rate is
      ``init_lr · (step − start_warmup_step)/num_warmup_steps`` *instead* — 0 for the very first update,
      and it jumps to the decayed value (``init_lr · (1 − num_warmup_steps/num_train_steps)``, not
      ``init_lr``) when warmup ends. ``start_warmup_step`` is ALBERT's flag (default 0); before it the
      upstream formula gives a negative rate, reproduced here.
    """
    _check_schedule(init_lr, num_train_steps, num_warmup_steps)
    f32 = np.float32
    lr = f32(init_lr)
    global_step = f32(min(f32(step), f32(num_train_steps)))
    decayed = (lr - f32(0.0)) * np.power(f32(1.0) - global_step / f32(num_train_steps), f32(poly_power)) + f32(0.0)
    if num_warmup_steps:
        warm_step = int(step) - int(start_warmup_step)
        if warm_step < num_warmup_steps:
            return float(lr * (f32(warm_step) / f32(num_warmup_steps)))
    return float(decayed)


class _UpstreamFactor:
    """``LambdaLR`` factor for one group: upstream's float32 rate divided by the group's base rate.

    A class rather than a closure so ``LambdaLR.state_dict`` saves its settings.
    """

    def __init__(self, init_lr: float, num_train_steps: int, num_warmup_steps: int, poly_power: float,
                 start_warmup_step: int) -> None:
        self.init_lr = init_lr
        self.num_train_steps = num_train_steps
        self.num_warmup_steps = num_warmup_steps
        self.poly_power = poly_power
        self.start_warmup_step = start_warmup_step

    def __call__(self, step: int) -> float:
        if not self.init_lr:
            return 0.0
        return learning_rate(step, init_lr=self.init_lr, num_train_steps=self.num_train_steps,
                             num_warmup_steps=self.num_warmup_steps, poly_power=self.poly_power,
                             start_warmup_step=self.start_warmup_step) / self.init_lr


def upstream_schedule(optimizer: torch.optim.Optimizer, *, num_train_steps: int, num_warmup_steps: int = 0,
                      poly_power: float = 1.0, start_warmup_step: int = 0, last_epoch: int = -1) -> LambdaLR:
    """A ``LambdaLR`` giving each group :func:`learning_rate` with its own ``lr`` as ``init_lr``.

    Call ``optimizer.step()`` then ``scheduler.step()`` per update, as usual: update k then uses the rate
    of global step k, as upstream. ``base_lr × factor`` is within a few double ulps of the float32 rate, so
    a float32 parameter update sees exactly upstream's float32 learning rate.
    """
    for group in optimizer.param_groups:
        _check_schedule(float(group.get("initial_lr", group["lr"])), num_train_steps, num_warmup_steps)
    factors = [_UpstreamFactor(float(group.get("initial_lr", group["lr"])), num_train_steps, num_warmup_steps,
                               poly_power, start_warmup_step) for group in optimizer.param_groups]
    return LambdaLR(optimizer, factors, last_epoch=last_epoch)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ clipping


@torch.no_grad()
def clip_by_global_norm(parameters: Iterable[torch.Tensor] | torch.Tensor, max_norm: float = 1.0) -> torch.Tensor:
    """Scale the gradients in place as ``tf.clip_by_global_norm(grads, max_norm)``; return the global norm.

    The norm is √Σ‖g‖² over all gradients; every gradient is multiplied by
    ``max_norm · min(1/norm, 1/max_norm)`` — exactly 1.0 when the norm is at most ``max_norm``, ``max_norm/norm``
    otherwise. ``torch.nn.utils.clip_grad_norm_`` instead uses ``max_norm/(norm + 1e-6)`` (a relative
    difference of 1e-6/norm), which is why this function exists. As in TF, a non-finite norm turns every
    gradient into NaN; check the returned norm before stepping if that must not reach the weights.
    """
    params = [parameters] if isinstance(parameters, torch.Tensor) else list(parameters)
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    device = grads[0].device
    norm = torch.stack([g.square().sum().to(device) for g in grads]).sum().sqrt()
    cap = torch.ones((), dtype=norm.dtype, device=device).div_(max_norm)
    scale = torch.minimum(1.0 / norm, cap).mul_(max_norm).add_(norm - norm)
    for g in grads:
        g.mul_(scale.to(g.device, g.dtype))
    return norm


def linear_schedule(optimizer: torch.optim.Optimizer, *, num_train_steps: int, num_warmup_steps: int = 0,
                    last_epoch: int = -1) -> LambdaLR:
    """Fine-tuning's schedule (transformers' ``get_linear_schedule_with_warmup``): the rate rises linearly from 0
    over ``num_warmup_steps``, then falls linearly to 0 at ``num_train_steps`` — no jump when warmup ends."""
    for group in optimizer.param_groups:
        _check_schedule(float(group.get("initial_lr", group["lr"])), num_train_steps, num_warmup_steps)
    return LambdaLR(optimizer, _LinearFactor(num_train_steps, num_warmup_steps), last_epoch=last_epoch)


class _LinearFactor:
    def __init__(self, num_train_steps: int, num_warmup_steps: int) -> None:
        self.num_train_steps, self.num_warmup_steps = num_train_steps, num_warmup_steps

    def __call__(self, step: int) -> float:
        if step < self.num_warmup_steps:
            return step / max(1, self.num_warmup_steps)
        return max(0.0, (self.num_train_steps - step) / max(1, self.num_train_steps - self.num_warmup_steps))


OptimizerName = Literal["lamb", "lamb-brightmart", "adamweightdecay", "adamw"]


def create_optimizer(params: ParamsLike, *, optimizer: OptimizerName = "lamb", init_lr: float,
                     num_train_steps: int, num_warmup_steps: int = 0, poly_power: float = 1.0,
                     start_warmup_step: int = 0,
                     schedule: Literal["upstream", "linear"] = "upstream") -> tuple[torch.optim.Optimizer, LambdaLR]:
    """Optimizer and schedule (clip with :func:`clip_by_global_norm` before each step): ``"lamb"``
    (google-research/albert's default), ``"lamb-brightmart"`` (brightmart/albert_zh), ``"adamweightdecay"``
    (google-research/bert's AdamWeightDecay, no bias correction) — each with β = (0.9, 0.999), ε = 1e-6 and the
    groups' weight decay (:func:`param_groups`) — or ``"adamw"``, torch's AdamW with bias correction and the same
    β, ε and groups. ``schedule``: upstream's (:func:`upstream_schedule`) or fine-tuning's
    (:func:`linear_schedule`).
    """
    opt: torch.optim.Optimizer
    if optimizer == "adamweightdecay":
        opt = AdamWeightDecay(params, init_lr)
    elif optimizer in ("lamb", "lamb-brightmart"):
        opt = Lamb(params, init_lr, variant="brightmart" if optimizer == "lamb-brightmart" else "google")
    elif optimizer == "adamw":
        opt = torch.optim.AdamW(params, lr=init_lr, betas=BETAS, eps=EPSILON)  # type: ignore[arg-type]
    else:
        raise UsageError(f"unknown optimizer {optimizer!r}",
                         hint="use 'lamb', 'lamb-brightmart', 'adamweightdecay' or 'adamw'")
    log.debug("optimizer %s, init_lr %g, %d train steps, %d warmup, %s schedule", optimizer, init_lr,
              num_train_steps, num_warmup_steps, schedule)
    if schedule == "linear":
        return opt, linear_schedule(opt, num_train_steps=num_train_steps, num_warmup_steps=num_warmup_steps)
    return opt, upstream_schedule(opt, num_train_steps=num_train_steps, num_warmup_steps=num_warmup_steps,
                                  poly_power=poly_power, start_warmup_step=start_warmup_step)


__all__ = [
    "BETAS",
    "EPSILON",
    "EXCLUDE_FROM_WEIGHT_DECAY",
    "UPSTREAM_EXCLUDES",
    "WEIGHT_DECAY",
    "ZOO_LAYER_NORM",
    "AdamWeightDecay",
    "Lamb",
    "clip_by_global_norm",
    "create_optimizer",
    "is_excluded",
    "learning_rate",
    "linear_schedule",
    "param_groups",
    "upstream_schedule",
]
