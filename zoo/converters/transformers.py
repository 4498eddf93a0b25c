"""Transformers-named ALBERT/BERT weights (``hf:`` sources) → zoo's converted directory.

``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` exactly once (nothing is ever unpickled
with code execution) and written, like a converted TF checkpoint, as ``model.safetensors`` with canonical names,
``config.json`` (the manifest's config), ``vocab.txt`` and ``receipt.json`` (:mod:`zoo.converters.layout`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoo.config import ModelConfig, present_heads
from zoo.converters import hf_names
from zoo.converters.canonical import encoder_shapes, head_shapes, shape_problems
from zoo.converters.layout import CONFIG, CONVERTER_VERSION, VOCAB, WEIGHTS, staged_output
from zoo.converters.safetensors_out import write_state
from zoo.converters.vocab import fit_rows, read_vocab
from zoo.errors import CheckpointError, UnsupportedError, first_line

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
    """Canonical name → shape for ``config`` with the pretraining heads."""
    shapes = encoder_shapes(config)
    for head in head_shapes(config).values():
        shapes.update(head)
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
                         lowercase: bool, strip_accents: bool | None) -> Path:
    """Write zoo's converted directory at ``out`` from a transformers weights file (``fmt`` ``pytorch`` or
    ``safetensors``) and its vocab. ``inputs`` (``{file: sha256}``) and ``source`` go into the receipt."""
    if config.architecture == "albert-brightmart":
        raise UnsupportedError("an hf source holds a transformers ALBERT or BERT, not brightmart's architecture",
                               hint="describe it with scheme-free family albert and embedding_size = hidden_size "
                                    "(as zoo export writes it)")
    state = hf_names.from_transformers(read_state(weights, fmt), config)
    check_shapes(state, config, str(weights))
    vocab = fit_rows(read_vocab(vocab_file), config.vocab_size, vocab_file)
    tensors = {name: t.contiguous() for name, t in state.items()}
    with staged_output(out, kind="conversion") as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, tensors, {"format": "pt", "zoo.source": source, "zoo.source_sha256": source_sha256})
        staged.write_json(CONFIG, config.to_dict(), "config")
        staged.write_text(VOCAB, vocab.text(), "vocab")
        staged.receipt.update({
            "converter_version": CONVERTER_VERSION,
            "format": fmt,
            "architecture": config.architecture,
            "source": source,
            "source_sha256": source_sha256,
            "inputs": [{"path": rel, "sha256": sha} for rel, sha in sorted(inputs.items())],
            "parameters": sum(t.numel() for t in tensors.values()),
            "tensors": len(tensors),
            "heads": sorted(present_heads(tensors)),
            "tokenizer": {"lowercase": lowercase, "strip_accents": strip_accents},
        })
    return out


__all__ = ["check_shapes", "convert_transformers", "expected_shapes", "read_state"]
