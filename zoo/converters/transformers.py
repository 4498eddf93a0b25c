"""Transformers-named ALBERT/BERT weights (``hf:`` sources) → zoo's converted directory.

``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` exactly once (nothing is ever unpickled
with code execution) and cached, like a converted TF checkpoint, as ``model.safetensors`` with canonical names,
``config.json`` (the manifest's config), ``vocab.txt`` and ``receipt.json`` under
``zoo.cache.converted_dir(<combined sha256 of the source files>, CONVERTER_VERSION)``.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zoo import cache
from zoo.config import ModelConfig
from zoo.converters import hf_names
from zoo.converters.canonical import encoder_shapes, head_shapes
from zoo.converters.vocab import read_vocab
from zoo.errors import CheckpointError, UnsupportedError, first_line
from zoo.fetch.hf import combined_sha256, wanted_files

if TYPE_CHECKING:
    import torch

    from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.converters")

#: Bump when the output of :func:`ensure_converted` changes: conversions are cached by it.
CONVERTER_VERSION = 1



def ensure_converted(snapshot_dir: str | os.PathLike[str], *, manifest: Manifest, source: Source) -> Path:
    """zoo's converted directory for a pulled hf snapshot (transformers names), converting it on first use.

    Lives in ``zoo.cache.converted_dir(<combined sha256>, CONVERTER_VERSION)``: ``model.safetensors``
    (canonical names), ``config.json`` (the manifest's config), ``vocab.txt`` and ``receipt.json``.
    """
    from zoo.converters.ondemand import convert_once

    snapshot = Path(snapshot_dir)
    hashes = _snapshot_hashes(manifest, source, snapshot)
    combined = combined_sha256(hashes)
    return convert_once(cache.converted_dir(combined, CONVERTER_VERSION),
                        lambda target: _convert(snapshot, target, manifest, source, hashes, combined),
                        what=str(snapshot))

def _snapshot_hashes(manifest: Manifest, source: Source, snapshot: Path) -> dict[str, str]:
    """``{path: sha256}`` of the snapshot's files: from the cache marker when it is this snapshot, else hashed."""
    snap = cache.read_snapshot(manifest.name, cache.source_key(source))
    if snap is not None and snap.path == snapshot and cache.check_snapshot(snap):
        return {rel: record.sha256 for rel, record in snap.files.items()}
    return {rel: cache.hash_file(snapshot / rel)[0] for rel in wanted_files(source) if (snapshot / rel).is_file()}


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
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable {fmt} checkpoint: {first_line(exc)}",
                              hint="a pytorch_model.bin holding anything but tensors is refused on purpose"
                              if fmt == "pytorch" else "the file is damaged or truncated") from None
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
    """Every encoder tensor present with the shape ``config`` implies; heads may be absent, nothing extra."""
    expected = expected_shapes(config)
    heads = ("mlm.", "seq_relationship.")
    missing = sorted(k for k in expected if k not in state and not k.startswith(heads))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [f"{k} {list(state[k].shape)} (config implies {list(shape)})"
             for k, shape in expected.items() if k in state and tuple(state[k].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:5])}{' …' if len(wrong) > 5 else ''}")
    if problems:
        raise CheckpointError(f"{origin}: the weights do not match the {config.architecture} config: "
                              + "; ".join(problems), hint="the manifest's config describes another model")


def _convert(snapshot: Path, target: Path, manifest: Manifest, source: Source, hashes: dict[str, str],
             combined: str) -> None:
    from safetensors.torch import save_file

    from zoo import __version__

    config = manifest.config
    if config.architecture == "albert-brightmart":
        raise UnsupportedError(f"{manifest.name}: an hf source holds a transformers ALBERT or BERT, not brightmart's "
                               "architecture", hint="describe it with scheme-free family albert and "
                                                    "embedding_size = hidden_size (as zoo export writes it)")
    weights = source.find_checkpoint(snapshot)
    state = hf_names.from_transformers(read_state(weights, source.format), config)
    check_shapes(state, config, str(weights))
    vocab_file = source.find_vocab(snapshot)
    vocab = read_vocab(vocab_file)
    if len(vocab.tokens) > config.vocab_size:
        raise CheckpointError(f"{vocab_file}: {len(vocab.tokens)} tokens, but the manifest's vocab_size is "
                              f"{config.vocab_size}", hint="the vocab belongs to another model")
    if len(vocab.tokens) < config.vocab_size:
        log.warning("%s: %d tokens for vocab_size %d; ids above %d are never produced", vocab_file,
                    len(vocab.tokens), config.vocab_size, len(vocab.tokens) - 1)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tensors = {name: t.contiguous() for name, t in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "zoo.source": source.label, "zoo.source_sha256": combined})
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        (tmp / "vocab.txt").write_text(vocab.text(), encoding="utf-8")
        receipt = {
            "zoo_version": __version__,
            "converter_version": CONVERTER_VERSION,
            "format": source.format,
            "architecture": config.architecture,
            "source": source.label,
            "source_sha256": combined,
            "inputs": [{"path": rel, "sha256": sha} for rel, sha in sorted(hashes.items())],
            "outputs": [{"path": name, "sha256": cache.hash_file(tmp / name)[0]}
                        for name in ("model.safetensors", "config.json", "vocab.txt")],
            "parameters": sum(t.numel() for t in tensors.values()),
            "tensors": len(tensors),
            "heads": sorted({name.split(".")[0] for name in tensors if name.startswith(("mlm.", "seq_relationship."))}),
            "tokenizer": {"lowercase": manifest.tokenizer.lowercase,
                          "strip_accents": manifest.tokenizer.strip_accents},
        }
        (tmp / "receipt.json").write_text(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
