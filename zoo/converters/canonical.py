"""Shapes of zoo's canonical parameters for a :class:`~zoo.config.ModelConfig` (docs/architecture.md)."""

from __future__ import annotations

from collections.abc import Collection, Mapping

from zoo.config import ModelConfig

Shapes = dict[str, tuple[int, ...]]


def _linear(name: str, n_out: int, n_in: int, bias: bool = True) -> Shapes:
    shapes: Shapes = {f"{name}.weight": (n_out, n_in)}
    if bias:
        shapes[f"{name}.bias"] = (n_out,)
    return shapes


def _norm(name: str, width: int) -> Shapes:
    return {f"{name}.weight": (width,), f"{name}.bias": (width,)}


def encoder_shapes(config: ModelConfig) -> Shapes:
    """Every encoder parameter (embeddings, layer sets, pooler) with its ``[out, in]`` shape."""
    v, e, d, h, i = (config.vocab_size, config.word_embedding_size, config.embedding_width,
                     config.hidden_size, config.intermediate_size)
    shapes: Shapes = {
        "embeddings.word.weight": (v, e),
        "embeddings.position.weight": (config.max_position_embeddings, d),
        "embeddings.token_type.weight": (config.type_vocab_size, d),
        **_norm("embeddings.norm", d),
    }
    if config.architecture == "albert-brightmart":
        shapes.update(_linear("embeddings.word_proj", h, e, bias=False))
    if config.has_mapping_in:
        shapes.update(_linear("embeddings.mapping_in", h, e))
    for k in range(config.num_layer_sets):
        c = f"layers.{k}"
        for part in ("query", "key", "value", "output"):
            shapes.update(_linear(f"{c}.attention.{part}", h, h))
        shapes.update(_norm(f"{c}.attention_norm", h))
        shapes.update(_linear(f"{c}.intermediate", i, h))
        shapes.update(_linear(f"{c}.output", h, i))
        shapes.update(_norm(f"{c}.output_norm", h))
    shapes.update(_linear("pooler", h, h))
    return shapes


def shape_problems(shapes: Mapping[str, tuple[int, ...]], expected: Mapping[str, tuple[int, ...]], *,
                   optional: tuple[str, ...] = (), ignored: Collection[str] = ()) -> list[str]:
    """What keeps ``shapes`` (name → shape of the tensors at hand) from being exactly ``expected``: missing names
    (except those starting with an ``optional`` prefix), unexpected ones (except ``ignored``) and wrong shapes, each
    listed with at most five examples. Empty when they match."""
    missing = sorted(k for k in expected if k not in shapes and not k.startswith(optional))
    unexpected = sorted(k for k in shapes if k not in expected and k not in ignored)
    wrong = [f"{k} {list(shapes[k])} (config implies {list(shape)})"
             for k, shape in expected.items() if k in shapes and tuple(shapes[k]) != tuple(shape)]
    problems = []
    for label, items, sep in (("missing", missing, ", "), ("unexpected", unexpected, ", "),
                              ("wrong shapes:", wrong, "; ")):
        if items:
            problems.append(f"{label} {sep.join(items[:5])}{' …' if len(items) > 5 else ''}")
    return problems


def task_shapes(config: ModelConfig) -> Shapes:
    """The fine-tuned task head ``config`` states (``task`` and ``labels``): a classifier from H to the labels,
    on the pooled output or on every token alike. Empty for a model without a task head."""
    if config.task is None or config.labels is None:
        return {}
    return _linear("classifier", len(config.labels), config.hidden_size)


def head_shapes(config: ModelConfig) -> dict[str, Shapes]:
    """The pretraining heads' parameters, per head (``mlm``, ``seq_relationship``)."""
    h, m = config.hidden_size, config.mlm_width
    return {
        "mlm": {**_linear("mlm.transform", m, h), **_norm("mlm.norm", m), "mlm.bias": (config.vocab_size,)},
        "seq_relationship": _linear("seq_relationship", 2, h),
    }
