"""zoo.training.optim: upstream LAMB / AdamWeightDecay, the warmup + linear-decay schedule, TF-style clipping.

Checked three ways: against an independent float32 numpy rendering of the upstream formulas (written here
from google-research/albert lamb_optimizer.py, google-research/bert optimization.py and brightmart/albert_zh
optimization.py), against the real upstream optimizers' recorded steps (tests/fixtures/pretraining/optimizers),
and for exact resume through state_dict.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from support.floats import assert_ulps
from torch import nn

from zoo.errors import UnsupportedError, UsageError
from zoo.training.optim import (
    AdamWeightDecay,
    Lamb,
    clip_by_global_norm,
    create_optimizer,
    is_excluded,
    learning_rate,
    param_groups,
    upstream_schedule,
)

OPTIMIZER_FIXTURES = Path(__file__).parent / "fixtures" / "pretraining" / "optimizers"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
F = np.float32


# How far, in float32 ulps, zoo's steps may be from the upstream arithmetic (tests/support/floats.py). Products
# and sums are correctly rounded (IEEE 754) by every CPU and GPU kernel, so moments made of them alone are
# exact anywhere, and a fused lerp/addcmul would show as 1 ulp. Everything else rounds as the kernel does:
# torch's float32 sqrt on CPU is within 1 ulp of numpy's correctly rounded one, but differs for ~17% of inputs
# here (any ATEN_CPU_CAPABILITY, AMD EPYC), and norms are sums in the kernel's order. A weight is judged in
# ulps of the largest magnitude it has held (w − lr·u that nearly cancels is off by ulps of w, not of the
# small result). Measured on an AVX-512 CPU: weights ≤ 2 ulps, moments 0, norms ≤ 1.
NORM_ULPS = 4  # a sum of squares, then sqrt
MOMENT_ULPS = 8  # once a gradient is clipped: scaled by a norm
WEIGHT_ULPS = 8  # sqrt every step, trust ratios, clipped gradients, accumulating over the steps


# ------------------------------------------------------------------ numpy rendering of the upstream code


def ref_learning_rate(step: int, init_lr: float, total: int, warmup: int) -> np.float32:
    """tf.train.polynomial_decay(power=1, end=0) from global step 0, replaced by the linear warmup while
    global_step < warmup (optimization.create_optimizer), in float32."""
    decayed = F(init_lr) * (F(1.0) - F(min(step, total)) / F(total))
    if warmup and step < warmup:
        return F(init_lr) * (F(step) / F(warmup))
    return decayed


def ref_clip(grads: list[np.ndarray], clip_norm: float = 1.0) -> tuple[list[np.ndarray], np.float32]:
    """tf.clip_by_global_norm: norm = sqrt(2·Σ l2_loss), scale = clip·min(1/norm, 1/clip) + (norm − norm)."""
    norm = np.sqrt(F(2.0) * np.sum([F(0.5) * np.sum(g * g) for g in grads], dtype=np.float32))
    scale = F(clip_norm) * np.minimum(F(1.0) / norm, F(1.0) / F(clip_norm)) + (norm - norm)
    return [g * scale for g in grads], norm


def ref_step(kind: str, w: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, lr: np.float32,
             decay: bool, adapt: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One upstream apply_gradients for one variable, float32 throughout, operation by operation."""
    m = F(0.9) * m + F(1.0 - 0.9) * g
    v = F(0.999) * v + F(1.0 - 0.999) * (g * g)
    update = m / (np.sqrt(v) + F(1e-6))
    if decay:
        update = update + F(0.01) * w
    ratio = F(1.0)
    if kind == "lamb-brightmart" or (kind == "lamb" and adapt):
        w_norm, u_norm = np.sqrt(np.sum(w * w)), np.sqrt(np.sum(update * update))
        ratio = w_norm / u_norm if w_norm > 0 and u_norm > 0 else F(1.0)
    return w - (ratio * lr) * update, m, v


# zoo canonical names: decayed/adapted = kernels and embeddings; excluded = LayerNorm and biases
SHAPES = {
    "embeddings.word.weight": (7, 4),
    "layers.0.attention.query.weight": (4, 4),
    "layers.0.attention.query.bias": (4,),
    "layers.0.attention_norm.weight": (4,),
    "layers.0.output_norm.bias": (4,),
    "mlm.bias": (7,),
    "seq_relationship.weight": (2, 4),
}
ZERO_INIT = {"mlm.bias", "seq_relationship.weight"}  # ‖w‖ = 0 at first: trust ratio 1


def scenario(seed: int = 0, steps: int = 6) -> tuple[dict[str, np.ndarray], list[dict[str, np.ndarray]]]:
    rng = np.random.default_rng(seed)
    initial = {name: (np.zeros(shape) if name in ZERO_INIT else rng.normal(0, 0.5, shape)).astype(np.float32)
               for name, shape in SHAPES.items()}
    grads = []
    for t in range(steps):
        scale = 2.0 if t == 2 else 0.1  # step 2 exceeds the clip norm of 1.0
        step = {name: rng.normal(0, scale, shape).astype(np.float32) for name, shape in SHAPES.items()}
        if t == 3:
            step["layers.0.attention.query.weight"][:] = 0  # m ≠ 0 still, ‖u‖ > 0
        if t == 0:
            step["mlm.bias"][:] = 0  # u = 0/(0 + ε) = 0 and no decay: ‖u‖ = 0
        grads.append(step)
    return initial, grads


def run_reference(kind: str, initial: dict[str, np.ndarray], grads: list[dict[str, np.ndarray]],
                  init_lr: float = 0.01, total: int = 10, warmup: int = 2) -> list[dict[str, tuple[np.ndarray, ...]]]:
    w = dict(initial)
    m = {k: np.zeros_like(x) for k, x in w.items()}
    v = {k: np.zeros_like(x) for k, x in w.items()}
    history = []
    for t, step in enumerate(grads):
        names = list(step)
        clipped, _ = ref_clip([step[k] for k in names])
        lr = ref_learning_rate(t, init_lr, total, warmup)
        for name, g in zip(names, clipped):
            excluded = any(p in name for p in ("bias", "norm."))
            w[name], m[name], v[name] = ref_step(kind, w[name], g, m[name], v[name], lr,
                                                 decay=not excluded, adapt=not excluded)
        history.append({k: (w[k].copy(), m[k].copy(), v[k].copy()) for k in names})
    return history


class Tiny(nn.Module):
    """Parameters under zoo's canonical names, for the optimizer only (no forward needed)."""

    def __init__(self, initial: dict[str, np.ndarray], device: str = "cpu") -> None:
        super().__init__()
        self.names = list(initial)
        for name, value in initial.items():
            self.register_parameter(name.replace(".", "__"), nn.Parameter(torch.tensor(value, device=device)))

    def named_parameters(self, *args: Any, **kwargs: Any):  # type: ignore[override]
        for name in self.names:
            yield name, getattr(self, name.replace(".", "__"))

    def param(self, name: str) -> nn.Parameter:
        return getattr(self, name.replace(".", "__"))


def train(kind: str, model: Tiny, grads: list[dict[str, np.ndarray]], opt: Any = None, sched: Any = None,
          start: int = 0) -> tuple[Any, Any, list[dict[str, tuple[np.ndarray, ...]]]]:
    if opt is None:
        opt, sched = create_optimizer(model, optimizer=kind, init_lr=0.01, num_train_steps=10, num_warmup_steps=2)
    history = []
    for step in grads[start:]:
        for name, g in step.items():
            model.param(name).grad = torch.tensor(g, device=model.param(name).device)
        clip_by_global_norm(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad()
        history.append({name: (model.param(name).detach().cpu().numpy().copy(),
                               opt.state[model.param(name)]["exp_avg"].cpu().numpy().copy(),
                               opt.state[model.param(name)]["exp_avg_sq"].cpu().numpy().copy())
                        for name in model.names})
    return opt, sched, history


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["lamb", "lamb-brightmart", "adamweightdecay"])
def test_steps_follow_the_upstream_formulas(kind: str, device: str) -> None:
    initial, grads = scenario()
    want = run_reference(kind, initial, grads)
    _, _, got = train(kind, Tiny(initial, device), grads)
    peak = {name: (np.abs(initial[name]), 0.0, 0.0) for name in SHAPES}  # largest |w|, |m|, |v| so far
    for t, (ours, theirs) in enumerate(zip(got, want)):
        moment_ulps = 0 if t < 2 else MOMENT_ULPS  # steps 0 and 1 are not clipped: products and sums only
        for name in SHAPES:
            peak[name] = tuple(np.maximum(p, np.abs(x)) for p, x in zip(peak[name], theirs[name]))
            for what, x, y, p, ulps in zip("wmv", ours[name], theirs[name], peak[name],
                                           (WEIGHT_ULPS, moment_ulps, moment_ulps)):
                assert_ulps(x, y, ulps, f"step {t} {what} {name}", scale=p)
    if kind == "adamweightdecay":  # zero-initialised, decayed, no trust ratio: moves only by lr·u
        assert not np.array_equal(got[-1]["seq_relationship.weight"][0], 0)


def test_first_update_has_zero_learning_rate_and_zero_norm_params_use_ratio_one() -> None:
    initial, grads = scenario()
    _, _, got = train("lamb", Tiny(initial), grads)
    for name in SHAPES:  # global step 0: lr = init_lr · 0/warmup = 0, so nothing moves; moments do
        np.testing.assert_array_equal(got[0][name][0], initial[name])
        assert np.any(got[0][name][1] != 0) or name == "mlm.bias"
    # seq_relationship.weight starts at 0: ‖w‖ = 0 → ratio 1 → it moves by lr·(m/(√v+ε) + 0.01·0)
    w, m, v = got[1]["seq_relationship.weight"]
    lr = ref_learning_rate(1, 0.01, 10, 2)
    assert_ulps(w, -((F(1.0) * lr) * (m / (np.sqrt(v) + F(1e-6)))), WEIGHT_ULPS, "step 1")


def test_trust_ratio_scales_adapted_updates_only() -> None:
    """One step with a known trust ratio: adapted params move by r·lr·u, excluded ones by lr·u."""
    w = torch.tensor([3.0, 4.0])  # ‖w‖ = 5
    params = {"dense.weight": nn.Parameter(w.clone()), "dense.bias": nn.Parameter(w.clone())}
    for kind in ("google", "brightmart"):
        model = {k: nn.Parameter(p.detach().clone()) for k, p in params.items()}
        opt = Lamb(list(model.items()), lr=0.1, variant=kind)  # type: ignore[arg-type]
        for p in model.values():
            p.grad = torch.tensor([1.0, -1.0])
        opt.step()
        # m = 0.1·g, v = 0.001·g²: u = 0.1g/(√0.001·|g| + 1e-6)
        u = np.float32(0.1) / (np.sqrt(np.float32(0.001)) + np.float32(1e-6)) * np.array([1, -1], np.float32)
        u_decayed = u + np.float32(0.01) * np.array([3, 4], np.float32)
        ratio = 5.0 / np.linalg.norm(u_decayed)
        np.testing.assert_allclose(model["dense.weight"].detach().numpy(), [3, 4] - 0.1 * ratio * u_decayed,
                                   rtol=1e-6)
        bias_ratio = 5.0 / np.linalg.norm(u) if kind == "brightmart" else 1.0
        np.testing.assert_allclose(model["dense.bias"].detach().numpy(), [3, 4] - 0.1 * bias_ratio * u, rtol=1e-6)


# ----------------------------------------------------------------------------------------- schedule


def test_schedule_matches_create_optimizer() -> None:
    values = [learning_rate(s, init_lr=0.01, num_train_steps=10, num_warmup_steps=2) for s in range(13)]
    want = [F(0.0), F(0.01) * F(0.5)] + [F(0.01) * (F(1) - F(s) / F(10)) for s in range(2, 10)] + [F(0)] * 3
    assert values == [float(x) for x in want]
    # the peak 0.01 is never used: decay counts from step 0, warmup ends at 0.01·(1 − 2/10)
    assert values[2] == float(F(0.008))
    # no warmup: full rate at step 0
    assert learning_rate(0, init_lr=0.01, num_train_steps=10) == float(F(0.01))
    # ALBERT's start_warmup_step shifts the warmup only; poly_power bends the decay
    assert learning_rate(6, init_lr=0.01, num_train_steps=10, num_warmup_steps=2, start_warmup_step=5) == \
        float(F(0.01) * (F(1) / F(2)))
    assert learning_rate(5, init_lr=1.0, num_train_steps=10, poly_power=2.0) == 0.25


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"num_train_steps": 0}, "num_train_steps"),
    ({"num_train_steps": 10, "num_warmup_steps": -1}, "num_warmup_steps"),
    ({"num_train_steps": 10, "init_lr": -1.0}, "learning rate"),
])
def test_schedule_rejects_bad_settings(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        learning_rate(0, **{"init_lr": 0.01, **kwargs})


def test_scheduler_hands_the_optimizer_upstreams_float32_rates() -> None:
    param = nn.Parameter(torch.ones(3))
    opt = AdamWeightDecay([param], lr=0.00176)
    sched = upstream_schedule(opt, num_train_steps=125000, num_warmup_steps=3125)
    opt.step()  # (no gradients: a no-op) so LambdaLR does not warn about the order of calls
    for step in range(0, 130000, 997):
        sched.last_epoch = step - 1
        sched.step()
        want = learning_rate(step, init_lr=0.00176, num_train_steps=125000, num_warmup_steps=3125)
        assert np.float32(opt.param_groups[0]["lr"]) == np.float32(want), step
        assert abs(opt.param_groups[0]["lr"] - want) <= 1e-15


# ----------------------------------------------------------------------------------------- clipping


def test_clipping_is_tf_clip_by_global_norm() -> None:
    rng = np.random.default_rng(1)
    for scale in (0.01, 3.0):
        grads = [rng.normal(0, scale, shape).astype(np.float32) for shape in ((5, 3), (4,), (2, 2, 2))]
        params = [nn.Parameter(torch.zeros(g.shape)) for g in grads] + [nn.Parameter(torch.zeros(2))]
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        norm = clip_by_global_norm(params, 1.0)
        want, want_norm = ref_clip(grads)
        assert_ulps(norm.numpy(), want_norm, NORM_ULPS, "norm")
        for p, g, w in zip(params, grads, want):
            assert_ulps(p.grad.numpy(), w, NORM_ULPS, "grad")
            if scale == 0.01:  # under the limit: scale is exactly 1 (whatever the norm's rounding), untouched
                np.testing.assert_array_equal(p.grad.numpy(), g)
        assert params[-1].grad is None
        # torch's clip_grad_norm_ divides by norm + 1e-6: the same up to that epsilon
        for p, g in zip(params, grads):
            p.grad = torch.tensor(g)
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for p, w in zip(params, want):
            np.testing.assert_allclose(p.grad.numpy(), w, rtol=2e-6)


def test_clipping_edge_cases() -> None:
    zero = nn.Parameter(torch.zeros(3))
    zero.grad = torch.zeros(3)
    assert float(clip_by_global_norm([zero])) == 0.0
    assert torch.equal(zero.grad, torch.zeros(3))
    inf = nn.Parameter(torch.zeros(2))
    inf.grad = torch.tensor([float("inf"), 1.0])
    assert not torch.isfinite(clip_by_global_norm(inf))
    assert torch.isnan(inf.grad).all()  # as TF: a non-finite norm poisons every gradient
    assert float(clip_by_global_norm([nn.Parameter(torch.zeros(1))])) == 0.0  # no gradients at all


# ------------------------------------------------------------------------------------ parameter groups


@pytest.mark.parametrize(("name", "excluded"), [
    ("embeddings.word.weight", False),
    ("embeddings.position.weight", False),
    ("embeddings.word_proj.weight", False),
    ("embeddings.norm.weight", True),
    ("embeddings.norm.bias", True),
    ("embeddings.mapping_in.weight", False),
    ("embeddings.mapping_in.bias", True),
    ("layers.0.attention.query.weight", False),
    ("layers.0.attention.output.bias", True),
    ("layers.0.attention_norm.weight", True),
    ("layers.11.output_norm.weight", True),
    ("layers.0.intermediate.weight", False),
    ("pooler.weight", False),
    ("mlm.transform.weight", False),
    ("mlm.norm.weight", True),
    ("mlm.bias", True),
    ("seq_relationship.weight", False),
    ("seq_relationship.bias", True),
    # upstream TF names match the same patterns
    ("bert/encoder/layer_0/attention/output/LayerNorm/gamma", True),
    ("bert/encoder/transformer/group_0/inner_group_0/LayerNorm_1/beta", True),
    ("cls/predictions/output_bias", True),
    ("cls/seq_relationship/output_weights", False),
    ("bert/encoder/embedding_hidden_mapping_in/kernel", False),
])
def test_exclusions_mirror_upstream(name: str, excluded: bool) -> None:
    assert is_excluded(name) is excluded


def test_param_groups() -> None:
    shared = nn.Parameter(torch.ones(2))
    frozen = nn.Parameter(torch.ones(2), requires_grad=False)
    named = [("layers.0.attention.query.weight", shared), ("layers.1.attention.query.weight", shared),
             ("layers.0.attention_norm.weight", nn.Parameter(torch.ones(2))), ("frozen.weight", frozen),
             ("mlm.bias", nn.Parameter(torch.zeros(2)))]
    groups = param_groups(named)
    assert [(g["param_names"], g["weight_decay"], g["layer_adaptation"]) for g in groups] == [
        (["layers.0.attention.query.weight"], 0.01, True),
        (["layers.0.attention_norm.weight", "mlm.bias"], 0.0, False),
    ]
    # no weight decay at all: still no trust ratio for LayerNorm/bias (upstream's layer adaptation excludes)
    groups = param_groups(named, weight_decay=0.0)
    assert [(g["weight_decay"], g["layer_adaptation"]) for g in groups] == [(0.0, True), (0.0, False)]
    with pytest.raises(UsageError, match="no trainable"):
        param_groups([("frozen.weight", frozen)])
    with pytest.raises(UsageError, match="pairs"):
        param_groups([shared])  # type: ignore[list-item]


def test_optimizers_reject_what_they_cannot_do_faithfully() -> None:
    with pytest.raises(UnsupportedError, match="float32"):
        Lamb([nn.Parameter(torch.ones(2, dtype=torch.float16))], lr=0.1)
    with pytest.raises(UsageError, match="learning rate"):
        Lamb([nn.Parameter(torch.ones(2))], lr=-1.0)
    with pytest.raises(UsageError, match="betas"):
        AdamWeightDecay([nn.Parameter(torch.ones(2))], lr=0.1, betas=(0.9, 1.0))
    with pytest.raises(UsageError, match="variant"):
        Lamb([nn.Parameter(torch.ones(2))], lr=0.1, variant="nvidia")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="optimizer"):
        create_optimizer([nn.Parameter(torch.ones(2))], optimizer="sgd", init_lr=0.1,  # type: ignore[arg-type]
                         num_train_steps=10)
    emb = nn.Embedding(4, 2, sparse=True)
    opt = AdamWeightDecay(emb.parameters(), lr=0.1)
    emb(torch.tensor([1])).sum().backward()
    with pytest.raises(UnsupportedError, match="sparse"):
        opt.step()


# ------------------------------------------------------------------------------------------- resume


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["lamb", "lamb-brightmart", "adamweightdecay"])
def test_state_dict_resume_is_bit_identical(kind: str, device: str) -> None:
    initial, grads = scenario(seed=3, steps=8)
    _, _, straight = train(kind, Tiny(initial, device), grads)

    model = Tiny(initial, device)
    opt, sched, first = train(kind, model, grads[:4])
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict()}, buffer)
    del model, opt, sched
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)

    model = Tiny({k: np.full_like(v, 7.0) for k, v in initial.items()}, device)  # garbage, overwritten
    model.load_state_dict(saved["model"])
    opt, sched = create_optimizer(model, optimizer=kind, init_lr=0.01, num_train_steps=10, num_warmup_steps=2)
    opt.load_state_dict(saved["opt"])
    sched.load_state_dict(saved["sched"])
    assert opt.param_groups[0]["lr"] == learning_rate(4, init_lr=0.01, num_train_steps=10, num_warmup_steps=2)
    _, _, rest = train(kind, model, grads, opt, sched, start=4)
    # bit-identical is right here, on any CPU: both runs are this process, the same kernels on the same inputs
    for t, (a, b) in enumerate(zip(straight, first + rest)):
        for name in SHAPES:
            for what, x, y in zip("wmv", a[name], b[name]):
                np.testing.assert_array_equal(x, y, err_msg=f"step {t} {what} {name}")
    assert all(opt.state[p]["step"] == 8 for p in model.parameters())


# ------------------------------------------------------------------------------ real upstream optimizers

OPTIMIZER_FIXTURE_NAMES = {"albert_lamb": "lamb", "bert_adamw": "adamweightdecay", "brightmart_lamb": "lamb-brightmart"}


@pytest.mark.parametrize("name", sorted(OPTIMIZER_FIXTURE_NAMES))
def test_matches_the_real_upstream_optimizer(name: str) -> None:
    """Five steps of the real TF optimizer (create_optimizer: schedule, clipping, update) under TF names."""
    npz, meta_file = OPTIMIZER_FIXTURES / f"{name}.npz", OPTIMIZER_FIXTURES / f"{name}.json"
    if not (npz.is_file() and meta_file.is_file()):
        pytest.skip(f"{npz.name} is not generated yet (tests/fixtures/pretraining/optimizers)")
    kind = OPTIMIZER_FIXTURE_NAMES[name]
    data = np.load(npz)
    meta = json.loads(meta_file.read_text(encoding="utf-8"))
    call = meta["call"]
    order = meta["variable_order"]
    params = [(var, nn.Parameter(torch.tensor(data[f"initial/{var}"]))) for var in order]
    opt, sched = create_optimizer(params, optimizer=kind, init_lr=call["init_lr"],
                                  num_train_steps=call["num_train_steps"], num_warmup_steps=call["num_warmup_steps"])
    # our name-based groups make the same decisions upstream's _do_use_weight_decay/_do_layer_adaptation did
    decided = {n: (g["weight_decay"] > 0, g["layer_adaptation"]) for g in opt.param_groups for n in g["param_names"]}
    for var, info in meta["variables"].items():
        assert decided[var][0] == info["weight_decay"], var
        if "layer_adaptation" in info:
            assert decided[var][1] == info["layer_adaptation"], var
    peak = {var: (np.abs(data[f"initial/{var}"]), 0.0, 0.0) for var in order}  # largest |w|, |m|, |v| so far
    for t in range(meta["steps"]):
        for var, p in params:
            p.grad = torch.tensor(data[f"grads/{var}"][t])
        assert np.float32(opt.param_groups[0]["lr"]) == data["learning_rate"][t], t
        norm = clip_by_global_norm([p for _, p in params], 1.0)
        assert_ulps(norm.numpy(), data["grad_global_norm"][t], NORM_ULPS, f"step {t} norm")
        opt.step()
        sched.step()
        for var, p in params:
            state = opt.state[p]
            recorded = (data[f"params/{var}"][t], data[f"m/{var}"][t], data[f"v/{var}"][t])
            peak[var] = tuple(np.maximum(x, np.abs(y)) for x, y in zip(peak[var], recorded))
            for what, x, y, scale, ulps in zip(("w", "m", "v"), (p.detach(), state["exp_avg"], state["exp_avg_sq"]),
                                               recorded, peak[var], (WEIGHT_ULPS, MOMENT_ULPS, MOMENT_ULPS)):
                assert_ulps(x.numpy(), y, ulps, f"step {t} {what} {var}", scale=scale)
    assert np.array_equal(data["params/cls/predictions/output_bias"][0], data["initial/cls/predictions/output_bias"])
