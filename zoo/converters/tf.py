"""The TF converter: an upstream TF release (or a bare checkpoint prefix) → zoo's converted directory.

Reads the checkpoint with zoo's TensorBundle reader (no TensorFlow), maps names through the scheme's plan
(:mod:`zoo.converters.schemes`), streams every tensor into ``model.safetensors`` (hashed while written) and writes
``config.json``, the normalized ``vocab.txt`` and a receipt through :mod:`zoo.converters.layout`. The input files
are hashed on the second core while the conversion runs.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._fs import sha256_file
from zoo.config import SCHEME_ARCHITECTURE, ModelConfig, normalize_dtype
from zoo.converters.layout import CONFIG, CONVERTER_VERSION, VOCAB, WEIGHTS, Staged, staged_output
from zoo.converters.safetensors_out import Spec, header, write_tensor
from zoo.converters.schemes import Plan, check_scheme, detect_scheme, plan
from zoo.converters.vocab import Vocab, looks_cased, read_vocab
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.progress import ProgressCallback, ProgressEvent
from zoo.tf.bundle import TensorBundle, Variable, find_prefix

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zoo.converters")

_FLOAT_DTYPES = ("float32", "float16", "bfloat16", "float64")


@dataclasses.dataclass(frozen=True)
class Release:
    """The files of one upstream release: checkpoint prefix, config JSON (if any) and vocab."""

    prefix: Path
    config_file: Path | None
    vocab_file: Path


def _pick(directory: Path, pattern: str, what: str, option: str, prefer: tuple[str, ...] = ()) -> Path | None:
    found = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(found) > 1 and prefer:
        preferred = [p for p in found if p.name.startswith(prefer)]
        found = preferred or found
    if len(found) > 1:
        raise UsageError(f"{directory}: several {what} files ({', '.join(p.name for p in found)})",
                         hint=f"choose one with {option}")
    return found[0] if found else None


def find_release(src: str | os.PathLike[str], *, config: str | os.PathLike[str] | None = None,
                 vocab: str | os.PathLike[str] | None = None, need_config: bool = True) -> Release:
    """Find the checkpoint, config and vocab of an upstream release directory (or next to a prefix)."""
    prefix = find_prefix(src)
    directory = prefix.parent
    config_file = Path(config) if config is not None else None
    if config_file is None and need_config:
        config_file = _pick(directory, "*config*.json", "config", "--config", prefer=("albert_config", "bert_config"))
        if config_file is None:
            raise NotFoundError(f"{directory}: no *config*.json next to the checkpoint",
                                hint="pass the model's config with --config CONFIG.json")
    vocab_file = Path(vocab) if vocab is not None else _pick(directory, "vocab*.txt", "vocab", "--vocab")
    if vocab_file is None:
        raise NotFoundError(f"{directory}: no vocab*.txt next to the checkpoint",
                            hint="pass the vocab file with --vocab VOCAB.txt")
    for path in (config_file, vocab_file):
        if path is not None and not path.is_file():
            raise NotFoundError(f"{path}: no such file")
    return Release(prefix, config_file, vocab_file)


def load_config(path: Path, architecture: str) -> ModelConfig:
    """Read a config JSON: zoo's own (has ``architecture``) or an upstream one (upstream meaning)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not a readable JSON config ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    try:
        if "architecture" in data:
            return ModelConfig.from_dict(data)
        return ModelConfig.from_upstream(data, architecture)
    except KeyError as exc:
        raise CheckpointError(f"{path}: unknown config keys: {exc.args[0]}") from None
    except TypeError as exc:
        raise CheckpointError(f"{path}: incomplete config ({exc})",
                              hint="an upstream config needs vocab_size, hidden_size, num_hidden_layers, "
                                   "num_attention_heads and intermediate_size") from None


def _check_config(config: ModelConfig, origin: str) -> None:
    problems = config.problems()
    if problems:
        lines = "\n  ".join(f"{key}: {what}" for key, what in problems)
        raise CheckpointError(f"{origin}: inconsistent config:\n  {lines}")


def _transpose(x: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """``x.t().contiguous()`` written into a reused buffer (no fresh allocation and page faults per kernel)."""
    rows, cols = x.shape
    return scratch[: x.numel() * x.element_size()].view(x.dtype).view(cols, rows).copy_(x.t())


def _hash_inputs(bundle: TensorBundle, release: Release) -> list[dict[str, Any]]:
    files = [(bundle.index_path, "checkpoint-index")] + [(p, "checkpoint-data") for p in bundle.data_files]
    if release.config_file is not None:
        files.append((release.config_file, "config"))
    files.append((release.vocab_file, "vocab"))
    records = []
    for path, role in files:
        sha, size = sha256_file(path)
        records.append({"path": path.name, "role": role, "size": size, "sha256": sha})
    return records


def _write_weights(staged: Staged, bundle: TensorBundle, the_plan: Plan, dtype: str | None,
                   metadata: dict[str, str], emit: ProgressCallback, label: str) -> int:
    """Stream every planned tensor into the weights file (hashed as written); returns the parameter count."""
    import torch

    targets = sorted(the_plan.targets, key=lambda t: (bundle.variables[t.tf_name].shard,
                                                      bundle.variables[t.tf_name].offset))
    variables: dict[str, Variable] = {t.tf_name: bundle.variables[t.tf_name] for t in targets}
    specs = [Spec(t.name, dtype or variables[t.tf_name].dtype, t.shape) for t in targets]
    scratch_size = max((variables[t.tf_name].size for t in targets if t.transpose), default=0)
    scratch = torch.empty(scratch_size, dtype=torch.uint8)
    params, done, total = 0, 0, sum(spec.nbytes for spec in specs)
    with staged.open(WEIGHTS, "weights") as fh:
        fh.write(header(specs, metadata))
        for target, spec in zip(targets, specs):
            var = variables[target.tf_name]
            x = bundle.read(var)
            if target.transpose:
                x = _transpose(x, scratch)
            if dtype and spec.dtype != var.dtype:
                x = x.to(getattr(torch, dtype))
            write_tensor(fh, spec, x)
            params += x.numel()
            done += spec.nbytes
            emit(ProgressEvent("convert", label, done=done, total=total))
            del x
            bundle.evict(var)
    return params


def convert(src: str | os.PathLike[str], out: str | os.PathLike[str], *, scheme: str = "auto",
            config: ModelConfig | str | os.PathLike[str] | None = None,
            vocab: str | os.PathLike[str] | None = None, dtype: str | None = None,
            progress: ProgressCallback | None = None) -> Path:
    """Convert a TensorFlow checkpoint to zoo's format (no TensorFlow needed); returns ``out``.

    ``src`` is an upstream release directory (checkpoint + ``*config*.json`` + ``vocab*.txt``) or a checkpoint
    prefix. ``scheme`` is ``auto`` (detected from the variable names) or one of
    ``google-albert``, ``brightmart-albert``, ``google-bert``. ``config`` overrides the release's config: a
    :class:`ModelConfig`, zoo's ``config.json`` or an upstream config JSON (read with upstream meaning).
    ``dtype`` (``float32``/``float16``/``bfloat16``, or ``fp32``/``fp16``/``bf16``) casts the weights; default:
    as stored. ``progress`` receives ``convert`` events (bytes written).
    """
    given = config if isinstance(config, ModelConfig) else None
    release = find_release(src, config=None if given else config, vocab=vocab, need_config=given is None)
    return convert_release(release, Path(out), scheme=scheme, config=given, dtype=dtype, progress=progress)


def convert_release(release: Release, out: Path, *, scheme: str = "auto", config: ModelConfig | None = None,
                    dtype: str | None = None, source_sha256: str | None = None,
                    progress: ProgressCallback | None = None, label: str | None = None) -> Path:
    """Convert the files of ``release`` into ``out``; ``config`` (if given) replaces its config file."""
    dtype = normalize_dtype(dtype) if dtype is not None else None
    emit = progress or (lambda event: None)
    label = label or release.prefix.parent.name or release.prefix.name
    bundle = TensorBundle(release.prefix)
    try:
        shapes = {name: var.shape for name, var in bundle.variables.items()}
        scheme = detect_scheme(shapes) if scheme == "auto" else check_scheme(scheme)
        architecture = SCHEME_ARCHITECTURE[scheme]
        if config is not None:
            model_config, origin = config, "config"
        else:
            assert release.config_file is not None
            model_config, origin = load_config(release.config_file, architecture), str(release.config_file)
        _check_config(model_config, origin)
        the_plan = plan(scheme, model_config, shapes)
        for target in the_plan.targets:
            var = bundle.variables[target.tf_name]
            if var.dtype not in _FLOAT_DTYPES:
                raise CheckpointError(f"{bundle.index_path}: variable {var.name!r} is {var.dtype}, "
                                      "expected a float type")
        vocab_data = read_vocab(release.vocab_file, compact=scheme == "google-albert")
        if len(vocab_data.tokens) > model_config.vocab_size:
            raise CheckpointError(f"{release.vocab_file}: {len(vocab_data.tokens)} tokens, but the model has "
                                  f"vocab_size {model_config.vocab_size}; this vocab belongs to another model")
        if len(vocab_data.tokens) + (len(vocab_data.duplicates) if vocab_data.compact else 0) \
                < model_config.vocab_size:
            log.warning("%s: %d tokens for vocab_size %d; ids above %d are never produced", release.vocab_file,
                        len(vocab_data.tokens), model_config.vocab_size, len(vocab_data.tokens) - 1)
        log.info("converting %s (%s, %d variables, %d skipped: %s)", release.prefix, scheme, len(bundle),
                 len(the_plan.skipped_names), the_plan.skipped or "none")
        metadata = {"format": "pt", "zoo.scheme": scheme, "zoo.architecture": architecture,
                    "zoo.converter_version": str(CONVERTER_VERSION)}
        if source_sha256:
            metadata["zoo.source_sha256"] = source_sha256
        with staged_output(out, kind="conversion") as staged, \
                concurrent.futures.ThreadPoolExecutor(1) as pool:  # hash the inputs while converting
            inputs = pool.submit(_hash_inputs, bundle, release)
            params = _write_weights(staged, bundle, the_plan, dtype, metadata, emit, label)
            staged.write_json(CONFIG, model_config.to_dict(), "config")
            staged.write_text(VOCAB, vocab_data.text(), "vocab")
            staged.receipt.update(_receipt(scheme, model_config, the_plan, inputs.result(), params, dtype,
                                           vocab_data, source_sha256))
    finally:
        bundle.close()
    emit(ProgressEvent("done", label))
    log.info("wrote %s (%d parameters)", out, params)
    return out


def _receipt(scheme: str, config: ModelConfig, the_plan: Plan, inputs: list[dict[str, Any]],
             params: int, dtype: str | None, vocab: Vocab, source_sha256: str | None) -> dict[str, Any]:
    return {
        "converter_version": CONVERTER_VERSION,
        "scheme": scheme,
        "architecture": config.architecture,
        "source_sha256": source_sha256,
        "inputs": inputs,
        "dtype": dtype or "as stored",
        "parameters": params,
        "tensors": len(the_plan.targets),
        "heads": sorted(head for head, present in the_plan.heads.items() if present),
        "skipped": {"count": len(the_plan.skipped_names), "by_kind": the_plan.skipped,
                    "names": the_plan.skipped_names},
        # upstream releases do not record do_lower_case; loaders of a plain converted directory use this
        "tokenizer": {"lowercase": not looks_cased(vocab.tokens), "strip_accents": None,
                      "inferred_from": "vocab"},
        "vocab": {"tokens": len(vocab.tokens),
                  "duplicates": {str(k): v for k, v in vocab.duplicates.items()},
                  "duplicate_policy": "dropped (ALBERT ids follow first appearance)" if vocab.compact
                  else "replaced by placeholders (BERT ids follow lines)",
                  "empty_lines": vocab.empty},
    }


__all__ = ["Release", "convert", "convert_release", "find_release", "load_config"]
