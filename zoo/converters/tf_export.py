"""zoo → an upstream TensorFlow release folder: the other direction of :mod:`zoo.converters.tf`, without TensorFlow.

:func:`export_tf` writes what a release of google-research/bert, google-research/albert or brightmart/albert_zh
holds, so their ``run_classifier.py``/``run_squad.py``/``run_pretraining.py``, bert4keras or anything built on
``tf.train.load_checkpoint`` / ``init_from_checkpoint`` takes it as it took the original:

==========================  =====================  ======================  ===========
scheme                      checkpoint prefix      config                  vocab
==========================  =====================  ======================  ===========
``google-bert``             ``bert_model.ckpt``    ``bert_config.json``    ``vocab.txt``
``google-albert``           ``model.ckpt-best``    ``albert_config.json``  ``vocab.txt``
``brightmart-albert``       ``albert_model.ckpt``  ``albert_config.json``  ``vocab.txt``
==========================  =====================  ======================  ===========

plus ``checkpoint`` (the state file ``tf.train.latest_checkpoint`` reads) and zoo's ``receipt.json``. The
checkpoint (``PREFIX.index`` + ``PREFIX.data-00000-of-00001``) holds the upstream variables — names from the same
per-scheme maps the converter reads with (:func:`zoo.converters.schemes.name_map`, inverted), float32 as upstream
code creates them, kernels transposed back to ``[in, out]`` — the pretraining heads the model has, a fine-tuned
sequence classifier's head as ``run_classifier.py`` names it (``output_weights``/``output_bias``, with its labels
in ``labels.txt``), and nothing else: no optimizer slots, and ``global_step`` when given (``zoo export`` always
gives it). Token classification has no upstream convention: its head is left out, with a warning. It is written by
:mod:`zoo.tf.writer` (TensorFlow's bytes, streamed: one tensor band at a time) through
:func:`zoo.converters.modeldir.staged_output`.

The scheme follows from the architecture (``bert`` → google-bert, ``albert`` → google-albert,
``albert-brightmart`` → brightmart-albert); a model's receipt names the one it came from. Google ALBERT and
brightmart's ALBERT are different architectures, so neither exports under the other's scheme.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from zoo.config import SCHEME_ARCHITECTURE, SCHEMES, ModelConfig
from zoo.converters.arrays import FLOAT_DTYPES, cast, transposed_bands
from zoo.converters.canonical import encoder_shapes, head_shapes, shape_problems
from zoo.converters.modeldir import VOCAB, WEIGHTS, Staged, missing_file, read_directory_vocab, staged_output
from zoo.converters.names import TASK_NAME_MAPS, transposed
from zoo.converters.schemes import name_map, tf_task_shapes
from zoo.converters.tf import LABELS_FILE
from zoo.errors import CheckpointError, UnsupportedError, UsageError
from zoo.tf.writer import BundleWriter, checkpoint_state, data_file_name

log = logging.getLogger("zoo.converters")

#: scheme → (checkpoint prefix, config file name), as the scheme's releases name them.
RELEASE_FILES: dict[str, tuple[str, str]] = {
    "google-bert": ("bert_model.ckpt", "bert_config.json"),
    "google-albert": ("model.ckpt-best", "albert_config.json"),
    "brightmart-albert": ("albert_model.ckpt", "albert_config.json"),
}
#: architecture → the scheme whose code runs it.
ARCHITECTURE_SCHEME: dict[str, str] = {arch: scheme for scheme, arch in SCHEME_ARCHITECTURE.items()}
#: LayerNorm epsilon of every upstream modeling.py (``tf.contrib.layers.layer_norm``'s default).
UPSTREAM_LAYER_NORM_EPS = 1e-12
#: Task heads: an export writes a sequence classifier's (upstream run_classifier.py has one) and leaves the others
#: out (fresh, untrained heads; a token classifier or question answering, whose upstream names zoo does not write).
TASK_HEAD_PREFIXES = ("classifier.", "qa_outputs.")
_CHUNK = 8 << 20


# ------------------------------------------------------------------------------------------------ scheme
def choose_scheme(config: ModelConfig, requested: str | None = None,
                  receipt: Mapping[str, Any] | None = None) -> str:
    """The scheme to export ``config`` under: ``requested``, else the one the model came from (its receipt),
    else the one of its architecture. A scheme of another architecture is an :class:`UnsupportedError`."""
    if requested is not None and requested not in SCHEMES:
        raise UsageError(f"unknown scheme {requested!r}", hint=f"choose one of {', '.join(SCHEMES)}")
    came_from = (receipt or {}).get("scheme")
    scheme = requested or (came_from if came_from in SCHEMES else None) or ARCHITECTURE_SCHEME[config.architecture]
    if SCHEME_ARCHITECTURE[scheme] != config.architecture:
        native = ARCHITECTURE_SCHEME[config.architecture]
        raise UnsupportedError(
            f"{config.architecture} models cannot be exported as {scheme}: {scheme} checkpoints hold the "
            f"{SCHEME_ARCHITECTURE[scheme]} architecture, and the two compute different functions"
            + (" (brightmart projects the word embeddings E→H with a bias-free word_embeddings_2 before adding "
               "positions, Google ALBERT normalises in E and maps E→H after; brightmart has one shared layer)"
               if {scheme, native} == {"google-albert", "brightmart-albert"} else ""),
            hint=f"export it as {native} (the default), whose upstream code runs this model")
    return scheme


# ------------------------------------------------------------------------------------------------ config
def upstream_config(config: ModelConfig, scheme: str) -> tuple[dict[str, Any], list[str]]:
    """The upstream config JSON for ``config`` (the inverse of :meth:`ModelConfig.from_upstream`) and the
    approximations it implies, one sentence each (empty when the upstream code computes exactly this model).

    Upstream ``"gelu"`` is the tanh approximation (zoo's ``gelu_new``), so ``gelu_new`` exports as ``"gelu"``;
    transformers' exact (erf) ``gelu`` has no upstream equivalent and exports as ``"gelu"`` too, noted."""
    notes = []
    act = {"gelu_new": "gelu", "relu": "relu", "gelu": "gelu"}[config.hidden_act]
    if config.hidden_act == "gelu":
        notes.append("hidden_act: the model uses the exact (erf) GELU; the upstream TF code has only the tanh "
                     "approximation, which its \"gelu\" means (activations differ by at most about 1e-3)")
    if config.layer_norm_eps != UPSTREAM_LAYER_NORM_EPS:
        notes.append(f"layer_norm_eps: the model uses {config.layer_norm_eps:g}; the upstream TF code always uses "
                     f"{UPSTREAM_LAYER_NORM_EPS:g}")
    data: dict[str, Any] = {
        "attention_probs_dropout_prob": config.attention_dropout,
        "hidden_act": act,
        "hidden_dropout_prob": config.hidden_dropout,
        "hidden_size": config.hidden_size,
        "initializer_range": config.initializer_range,
        "intermediate_size": config.intermediate_size,
        "max_position_embeddings": config.max_position_embeddings,
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "type_vocab_size": config.type_vocab_size,
        "vocab_size": config.vocab_size,
    }
    if scheme == "google-albert":  # google-research/albert's AlbertConfig keys (its releases carry them all)
        data.update(embedding_size=config.word_embedding_size, num_hidden_groups=config.num_hidden_groups,
                    inner_group_num=config.inner_group_num, down_scale_factor=1, gap_size=0, net_structure_type=0,
                    num_memory_blocks=0)
    elif scheme == "brightmart-albert":  # brightmart's BertConfig reads embedding_size and ln_type from the JSON
        data.update(embedding_size=config.word_embedding_size, ln_type=config.ln_type)
    return dict(sorted(data.items())), notes


# ----------------------------------------------------------------------------------------------- weights
@dataclasses.dataclass(frozen=True)
class Tensor:
    """A canonical tensor, loaded on demand as its stored values (bfloat16 as uint16 bits); ``release`` says it is
    no longer needed (a mapped file drops its pages)."""

    dtype: str
    shape: tuple[int, ...]
    load: Callable[[], np.ndarray]
    release: Callable[[], None] = lambda: None


def canonical_tensors(directory: Path, config: ModelConfig,
                      layout: str) -> tuple[dict[str, Tensor], Callable[[], None]]:
    """The weights of a directory under canonical names, and a function that releases them.

    zoo's layout is read lazily without torch (numpy views of the mapped file); transformers' layout is renamed
    by :func:`zoo.converters.hf_names.from_transformers` (which needs torch)."""
    path = directory / WEIGHTS
    if not path.is_file():
        raise missing_file(directory, WEIGHTS)
    if layout == "zoo":
        from zoo.converters.safetensors_in import SafetensorsFile

        weights = SafetensorsFile(path)
        tensors = {name: Tensor(e.dtype, e.shape, functools.partial(weights.array, name),
                                functools.partial(weights.release, name))
                   for name, e in weights.entries.items()}
        return tensors, weights.close
    import torch

    from zoo.converters import hf_names
    from zoo.converters.transformers import read_state

    state = hf_names.from_transformers(read_state(path, "safetensors"), config)

    def numpy_of(t: torch.Tensor) -> np.ndarray:
        t = t.detach().cpu().contiguous()
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(np.uint16)
        return t.numpy()

    return ({name: Tensor(str(t.dtype).removeprefix("torch."), tuple(t.shape), functools.partial(numpy_of, t))
             for name, t in state.items()}, lambda: None)


def _check(tensors: Mapping[str, Tensor], config: ModelConfig, origin: str) -> tuple[list[str], list[str], bool]:
    """The pretraining heads present, the task-head tensors to leave out, and whether there is a pooler (a model
    from a transformers ``*ForMaskedLM`` checkpoint has none); anything else that is missing, unexpected or of the
    wrong shape is a :class:`CheckpointError`."""
    expected = encoder_shapes(config)
    pooler = [n for n in expected if n.startswith("pooler.")]
    has_pooler = any(n in tensors for n in pooler)
    if not has_pooler:
        for name in pooler:
            del expected[name]
    expected.update(tf_task_shapes(config))
    heads = []
    for head, shapes in head_shapes(config).items():
        present = [n for n in shapes if n in tensors]
        if present and len(present) < len(shapes):
            raise CheckpointError(f"{origin}: the {head} head is incomplete (has {', '.join(sorted(present))}; "
                                  f"lacks {', '.join(sorted(set(shapes) - set(present)))})")
        if present:
            heads.append(head)
            expected.update(shapes)
    dropped = sorted(n for n in tensors if n not in expected and n.startswith(TASK_HEAD_PREFIXES))
    problems = shape_problems({n: tuple(t.shape) for n, t in tensors.items()}, expected, ignored=dropped)
    if problems:
        raise CheckpointError(f"{origin}: the weights do not match the {config.architecture} config: "
                              + "; ".join(problems), hint="config.json must describe these weights")
    for name in sorted(tensors[n].dtype for n in expected):
        if name not in FLOAT_DTYPES:
            raise CheckpointError(f"{origin}: weights of dtype {name} cannot be exported (floating point only)")
    return heads, dropped, has_pooler


def _float32_chunks(x: np.ndarray, dtype: str, transpose: bool) -> Iterator[bytes]:
    """The tensor's float32 bytes (transposed for a TF kernel), a band at a time."""
    if transpose:
        for band in transposed_bands(x, band_bytes=_CHUNK):
            yield cast(band, dtype, "float32").tobytes()
        return
    flat = x.reshape(-1)
    step = max(1, _CHUNK // max(1, flat.itemsize))
    for i in range(0, flat.size, step):
        yield cast(flat[i:i + step], dtype, "float32").tobytes()


# ------------------------------------------------------------------------------------------------ export
def export_tf(directory: Path, out: Path, *, config: ModelConfig, layout: str = "zoo", scheme: str | None = None,
              global_step: int | None = None, source: str | None = None, source_sha256: str | None = None,
              receipt: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Write the upstream TF release of the weights in ``directory`` (zoo's layout, or transformers' with
    ``layout="transformers"``; ``config`` describes them) into ``out`` (new or empty). Returns ``{file: sha256}``
    of what was written (the receipt lists them too).

    ``scheme``: see :func:`choose_scheme` (``receipt`` is the source directory's). ``global_step`` adds TF's
    int64 ``global_step`` variable with that value (``None`` leaves it out, as a bare ``tf.train.Saver`` of the
    model variables would; :func:`zoo.export` always writes one). ``source``/``source_sha256`` go into the
    receipt."""
    scheme = choose_scheme(config, scheme, receipt)
    if global_step is not None and not 0 <= int(global_step) < 1 << 63:
        raise UsageError(f"global_step must be a non-negative 64-bit integer, got {global_step}")
    read_directory_vocab(directory, config)  # one line per embedding row, or a CheckpointError before any work
    vocab = directory / VOCAB
    upstream, notes = upstream_config(config, scheme)
    for note in notes:
        log.warning("%s: the upstream TF code approximates this model: %s", directory, note)
    tensors, release = canonical_tensors(directory, config, layout)
    try:
        heads, dropped, has_pooler = _check(tensors, config, str(directory / WEIGHTS))
        warnings = [_left_out(config, dropped)] if dropped else []
        for warning in warnings:
            log.warning("%s: %s", directory, warning)
        names = name_map(scheme, config, heads)  # TF name → canonical
        if not has_pooler:
            log.warning("%s has no pooler (saved without one): the export has no bert/pooler/dense either, and the "
                        "upstream code initialises it fresh, as zoo.load does", directory)
            names = {tf: c for tf, c in names.items() if not c.startswith("pooler.")}
        assert set(names.values()) == set(tensors) - set(dropped), "name map and weights disagree"
        prefix, config_name = RELEASE_FILES[scheme]
        with staged_output(out, kind="export") as staged:
            variables = _write_checkpoint(staged, prefix, tensors, names, global_step)
            staged.write_text(config_name, json.dumps(upstream, indent=2) + "\n", "config")
            staged.write_bytes(VOCAB, vocab.read_bytes(), "vocab")
            task = _write_labels(staged, config)
            staged.receipt.update({
                "format": "tf", "scheme": scheme, "architecture": config.architecture, "checkpoint": prefix,
                "config_file": config_name, "dtype": "float32",
                "source_dtypes": sorted({tensors[n].dtype for n in names.values()}), "heads": heads,
                "pooler": has_pooler, "global_step": global_step, "task": task,
                "labels": list(config.labels) if task is not None and config.labels else None, "left_out": dropped,
                "warnings": warnings, "approximations": notes, "variables": variables, "source": source,
                "source_sha256": source_sha256, "source_weights_sha256": _weights_sha256(receipt),
            })
            files = {name: item["sha256"] for name, item in staged.outputs.items()}
    finally:
        release()
    log.info("exported %s as a %s TF checkpoint (%d variables) to %s", directory, scheme, len(variables), out)
    return files


def _write_labels(staged: Staged, config: ModelConfig) -> str | None:
    """A head upstream TF code knows (run_classifier.py's): its labels in ``labels.txt``, in id order. Returns the
    task exported with its head, else None."""
    task = config.task if config.task in TASK_NAME_MAPS else None
    if task is not None and config.labels:
        staged.write_text(LABELS_FILE, "".join(f"{label}\n" for label in config.labels), "labels")
    return task


def _left_out(config: ModelConfig, dropped: list[str]) -> str:
    """Why the task-head tensors ``dropped`` are not in the export, in one sentence."""
    if config.task == "token-classification" and any(n.startswith("classifier.") for n in dropped):
        return (f"the token-classification head ({', '.join(dropped)}) is left out: upstream TensorFlow code has no "
                "convention for a token classifier, so the export holds the encoder only (fine-tune a tagger on it, "
                "or use the transformers export: zoo export --format hf)")
    return f"left out of the TF export (task heads that are not part of an upstream release): {', '.join(dropped)}"


def _write_checkpoint(staged: Staged, prefix: str, tensors: Mapping[str, Tensor], names: Mapping[str, str],
                      global_step: int | None) -> list[dict[str, Any]]:
    """``PREFIX.data-00000-of-00001`` (the tensors ``names`` maps TF names to, float32, streamed a band at a time,
    and ``global_step`` if given), ``PREFIX.index`` and the ``checkpoint`` state file; the variables written."""
    variables: list[dict[str, Any]] = []
    with staged.open(data_file_name(prefix), "checkpoint-data") as fh:
        writer = BundleWriter([fh])
        for tf_name in sorted([*names, *(["global_step"] if global_step is not None else [])]):
            if tf_name == "global_step":
                writer.add_array(tf_name, np.array(global_step, dtype=np.int64))
                variables.append({"name": tf_name, "dtype": "int64", "shape": []})
                continue
            tensor = tensors[names[tf_name]]
            flip = transposed(tf_name)
            shape = tuple(reversed(tensor.shape)) if flip else tensor.shape
            writer.add(tf_name, "float32", shape, _float32_chunks(tensor.load(), tensor.dtype, flip))
            tensor.release()
            variables.append({"name": tf_name, "dtype": "float32", "shape": list(shape)})
    staged.write_bytes(f"{prefix}.index", writer.index(), "checkpoint-index")
    staged.write_text("checkpoint", checkpoint_state(prefix), "checkpoint-state")
    return variables


def _weights_sha256(receipt: Mapping[str, Any] | None) -> str | None:
    for item in (receipt or {}).get("outputs") or ():
        if isinstance(item, Mapping) and item.get("path") == WEIGHTS:
            return str(item.get("sha256"))
    return None


__all__ = ["ARCHITECTURE_SCHEME", "RELEASE_FILES", "Tensor", "canonical_tensors", "choose_scheme", "export_tf",
           "upstream_config"]
