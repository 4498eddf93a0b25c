"""Transformers-named ALBERT/BERT weights (``hf:`` sources, transformers folders) → zoo's converted directory.

``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` exactly once (nothing is ever unpickled
with code execution) and written, like a converted TF checkpoint, as ``model.safetensors`` with canonical names,
``config.json`` (the manifest's config, or the folder's), ``vocab.txt`` and ``receipt.json``
(:mod:`zoo.converters.modeldir`). A transformers folder on disk (what ``save_pretrained`` or ``zoo export``
writes) is converted by :func:`convert_transformers_dir`.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoo._fs import sha256_file
from zoo.config import ModelConfig, normalize_dtype, present_heads
from zoo.converters import hf_names
from zoo.converters.canonical import encoder_shapes, head_shapes, shape_problems, task_shapes
from zoo.converters.modeldir import (
    CONFIG,
    CONVERTER_VERSION,
    VOCAB,
    WEIGHTS,
    missing_file,
    read_config,
    staged_output,
    tokenizer_options,
)
from zoo.converters.safetensors_out import write_state
from zoo.converters.vocab import fit_rows, read_vocab
from zoo.errors import CheckpointError, NotFoundError, UnsupportedError, first_line

if TYPE_CHECKING:
    import torch


def read_state(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """A transformers checkpoint file as a state dict: safetensors, or a pickle read with ``weights_only``."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if fmt == "safetensors":
            return load_file(str(path))
        # weights_only: tensors and plain containers only; anything else (code) is refused, never run
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's own text goes on to explain how to load the file anyway (weights_only=False, allow-listing
        # globals): advice that runs whatever code the file holds, so none of it is repeated here
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it references {found.group(1)})" if found else ""
        raise CheckpointError(f"{path}: not a readable {fmt} checkpoint: it holds objects other than tensors{what}, "
                              "which zoo does not unpickle",
                              hint="zoo refuses such files on purpose (unpickling can run code); use a source that "
                                   "publishes safetensors or a plain tensor state dict") from None
    except (SafetensorError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable {fmt} checkpoint: {first_line(exc)}",
                              hint="the file is damaged or truncated") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return {_modern_name(str(k)): v for k, v in state.items()}


def _modern_name(name: str) -> str:
    """pytorch-pretrained-bert era checkpoints call LayerNorm parameters gamma/beta."""
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
        if "LayerNorm" in name and name.endswith(old):
            return name.removesuffix(old) + new
    return name


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name → shape for ``config`` with the pretraining heads and the task head it states."""
    shapes = encoder_shapes(config)
    for head in head_shapes(config).values():
        shapes.update(head)
    shapes.update(task_shapes(config))
    return shapes


def check_shapes(state: Mapping[str, torch.Tensor], config: ModelConfig, origin: str) -> None:
    """Every encoder tensor present with the shape ``config`` implies; heads may be absent, and so may the pooler
    (transformers' ``*ForMaskedLM`` save none; the loader then initialises it fresh, with a warning); nothing extra."""
    problems = shape_problems({k: tuple(t.shape) for k, t in state.items()}, expected_shapes(config),
                              optional=("mlm.", "seq_relationship.", "pooler."))
    if problems:
        raise CheckpointError(f"{origin}: the weights do not match the {config.architecture} config: "
                              + "; ".join(problems), hint="the manifest's config describes another model")


def convert_transformers(weights: Path, vocab_file: Path, out: Path, *, config: ModelConfig, fmt: str,
                         source: str, source_sha256: str, inputs: Mapping[str, str],
                         lowercase: bool, strip_accents: bool | None, dtype: str | None = None) -> Path:
    """Write zoo's converted directory at ``out`` from a transformers weights file (``fmt`` ``pytorch`` or
    ``safetensors``) and its vocab. ``inputs`` (``{file: sha256}``) and ``source`` go into the receipt;
    ``dtype`` (``float32``/``float16``/``bfloat16``) casts the floating-point weights (default: as stored)."""
    if config.architecture == "albert-brightmart":
        raise UnsupportedError("an hf source holds a transformers ALBERT or BERT, not brightmart's architecture",
                               hint="describe it with scheme-free family albert and embedding_size = hidden_size "
                                    "(as zoo export writes it)")
    state = hf_names.from_transformers(read_state(weights, fmt), config)
    check_shapes(state, config, str(weights))
    vocab = fit_rows(read_vocab(vocab_file), config.vocab_size, vocab_file)
    import torch

    cast = getattr(torch, normalize_dtype(dtype)) if dtype is not None else None
    tensors = {name: (t.to(cast) if cast is not None and t.is_floating_point() else t).contiguous()
               for name, t in state.items()}
    with staged_output(out, kind="conversion") as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, tensors, {"format": "pt", "zoo.source": source, "zoo.source_sha256": source_sha256})
        staged.write_json(CONFIG, config.to_dict(), "config")
        staged.write_text(VOCAB, vocab.text(), "vocab")
        staged.receipt.update({
            "converter_version": CONVERTER_VERSION,
            "format": fmt,
            "dtype": normalize_dtype(dtype) if dtype is not None else "as stored",
            "architecture": config.architecture,
            "source": source,
            "source_sha256": source_sha256,
            "inputs": [{"path": rel, "sha256": sha} for rel, sha in sorted(inputs.items())],
            "parameters": sum(t.numel() for t in tensors.values()),
            "tensors": len(tensors),
            "heads": sorted(present_heads(tensors)),
            "task": config.task,
            "tokenizer": {"lowercase": lowercase, "strip_accents": strip_accents},
        })
    return out


# --------------------------------------------------------------------------------- transformers folders
#: The weights file of a transformers folder, in the order they are looked for, with their format.
FOLDER_WEIGHTS = ((WEIGHTS, "safetensors"), ("pytorch_model.bin", "pytorch"))


def is_transformers_dir(directory: Path) -> bool:
    """Whether ``directory`` is a transformers folder: a ``config.json`` with ``model_type`` (and not zoo's
    ``architecture``) next to ``model.safetensors`` or ``pytorch_model.bin``."""
    try:
        data = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "model_type" in data and "architecture" not in data and \
        any((directory / name).is_file() for name, _ in FOLDER_WEIGHTS)


def convert_transformers_dir(directory: Path, out: Path, *, vocab: str | os.PathLike[str] | None = None,
                             dtype: str | None = None, known_sha256: Mapping[str, str] | None = None) -> Path:
    """Write zoo's converted directory at ``out`` from a transformers folder: its ``config.json``, weights
    (:data:`FOLDER_WEIGHTS`), ``vocab.txt`` (or ``vocab``) and casing (``tokenizer_config.json``).
    ``known_sha256`` (``{file name: sha256}``): digests already checked — the folder's receipt — not hashed again."""
    directory = Path(directory)
    config, _ = read_config(directory)
    found = next(((name, fmt) for name, fmt in FOLDER_WEIGHTS if (directory / name).is_file()), None)
    if found is None:
        raise missing_file(directory, WEIGHTS)
    vocab_file = Path(vocab) if vocab is not None else directory / VOCAB
    if not vocab_file.is_file():
        raise NotFoundError(f"{vocab_file} does not exist",
                            hint="zoo reads the WordPiece vocab.txt of a transformers folder; pass one with --vocab")
    known = known_sha256 or {}
    inputs = {path.name: known.get(path.name) or sha256_file(path)[0]
              for path in (directory / found[0], directory / CONFIG, vocab_file)}
    lowercase, strip_accents = tokenizer_options(directory)
    return convert_transformers(directory / found[0], vocab_file, out, config=config, fmt=found[1],
                                source=str(directory.resolve()), source_sha256=inputs[found[0]], inputs=inputs,
                                lowercase=lowercase, strip_accents=strip_accents, dtype=dtype)


__all__ = ["FOLDER_WEIGHTS", "check_shapes", "convert_transformers", "convert_transformers_dir", "expected_shapes",
           "is_transformers_dir", "read_state"]
