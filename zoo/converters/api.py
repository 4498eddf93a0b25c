"""``zoo.converters.convert``: an upstream TF release (or a bare checkpoint prefix) → zoo's converted directory.

Output (written to a temporary sibling directory, then renamed into place, so it is complete or absent)::

    model.safetensors   canonical parameter names; metadata: scheme, source sha256s, converter version
    config.json         ModelConfig.to_dict()
    vocab.txt           normalized vocab (see zoo.converters.vocab)
    receipt.json        inputs with hashes → outputs with hashes, versions, scheme, heads, skipped variables
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import ModelConfig
from zoo.converters.receipt import file_record
from zoo.converters.safetensors_out import Spec, header, write_tensor
from zoo.converters.schemes import ARCHITECTURES, SCHEMES, Plan, check_scheme, detect_scheme, plan
from zoo.converters.vocab import Vocab, looks_cased, read_vocab
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.tf.bundle import TensorBundle, Variable, resolve_prefix

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zoo.converters")

#: Bump when the output of a conversion changes: cached conversions are keyed by it.
CONVERTER_VERSION = 1
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")
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


def locate(src: str | os.PathLike[str], *, config: str | os.PathLike[str] | None = None,
           vocab: str | os.PathLike[str] | None = None, need_config: bool = True) -> Release:
    """Find the checkpoint, config and vocab of an upstream release directory (or next to a prefix)."""
    prefix = resolve_prefix(src)
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


def _prepare_out(out: Path) -> Path:
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: already exists", hint="remove it or choose another output directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))


def _hash_inputs(bundle: TensorBundle, release: Release) -> list[dict[str, Any]]:
    files = [(bundle.index_path, "checkpoint-index")] + [(p, "checkpoint-data") for p in bundle.data_files]
    if release.config_file is not None:
        files.append((release.config_file, "config"))
    files.append((release.vocab_file, "vocab"))
    return [file_record(path, role) for path, role in files]


def _metadata(scheme: str, architecture: str, inputs: list[dict[str, Any]] | None,
              names: list[str]) -> dict[str, str]:
    hashes = {r["path"]: r["sha256"] for r in inputs} if inputs else {n: "0" * 64 for n in names}
    return {"format": "pt", "zoo.scheme": scheme, "zoo.architecture": architecture,
            "zoo.converter_version": str(CONVERTER_VERSION),
            "zoo.source_sha256": json.dumps(hashes, ensure_ascii=False, sort_keys=True)}


def _write_weights(path: Path, bundle: TensorBundle, the_plan: Plan, dtype: str | None,
                   metadata: dict[str, str], final_metadata: concurrent.futures.Future[dict[str, str]]) -> int:
    """Stream every planned tensor into ``path``; returns the parameter count."""
    import torch

    targets = sorted(the_plan.targets, key=lambda t: (bundle.variables[t.tf_name].shard,
                                                      bundle.variables[t.tf_name].offset))
    variables: dict[str, Variable] = {t.tf_name: bundle.variables[t.tf_name] for t in targets}
    specs = [Spec(t.name, dtype or variables[t.tf_name].dtype, t.shape) for t in targets]
    first = header(specs, metadata)
    scratch_size = max((variables[t.tf_name].size for t in targets if t.transpose), default=0)
    scratch = torch.empty(scratch_size, dtype=torch.uint8)
    params = 0
    with open(path, "wb") as fh:
        fh.seek(len(first))
        for target, spec in zip(targets, specs):
            var = variables[target.tf_name]
            x = bundle.read(var)
            if target.transpose:
                x = _transpose(x, scratch)
            if dtype and spec.dtype != var.dtype:
                x = x.to(getattr(torch, dtype))
            write_tensor(fh, spec, x)
            params += x.numel()
            del x
            bundle.evict(var)
        final = header(specs, final_metadata.result())
        if len(final) != len(first):
            raise AssertionError("safetensors header changed length")
        fh.seek(0)
        fh.write(final)
    return params


def convert(src: str | os.PathLike[str], out: str | os.PathLike[str], *, scheme: str = "auto",
            config: ModelConfig | str | os.PathLike[str] | None = None,
            vocab: str | os.PathLike[str] | None = None, dtype: str | None = None) -> Path:
    """Convert a TensorFlow checkpoint to zoo's format (no TensorFlow needed); returns ``out``.

    ``src`` is an upstream release directory (checkpoint + ``*config*.json`` + ``vocab*.txt``) or a checkpoint
    prefix. ``scheme`` is ``auto`` (detected from the variable names) or one of
    ``google-albert``, ``brightmart-albert``, ``google-bert``. ``config`` overrides the release's config: a
    :class:`ModelConfig`, zoo's ``config.json`` or an upstream config JSON (read with upstream meaning).
    ``dtype`` (``float32``/``float16``/``bfloat16``) casts the weights; default: as stored.
    """
    return _convert(src, out, scheme=scheme, config=config, vocab=vocab, dtype=dtype)


def _convert(src: str | os.PathLike[str], out: str | os.PathLike[str], *, scheme: str,
             config: ModelConfig | str | os.PathLike[str] | None, vocab: str | os.PathLike[str] | None,
             dtype: str | None, source_sha256: str | None = None) -> Path:
    if dtype is not None and dtype not in OUTPUT_DTYPES:
        raise UsageError(f"unsupported output dtype {dtype!r}; expected one of {', '.join(OUTPUT_DTYPES)}")
    given = config if isinstance(config, ModelConfig) else None
    release = locate(src, config=None if given else config, vocab=vocab, need_config=given is None)
    bundle = TensorBundle(release.prefix)
    shapes = {name: var.shape for name, var in bundle.variables.items()}
    scheme = detect_scheme(shapes) if scheme == "auto" else check_scheme(scheme)
    architecture = ARCHITECTURES[scheme]
    if given is not None:
        model_config, origin = given, "config"
    else:
        assert release.config_file is not None
        model_config, origin = load_config(release.config_file, architecture), str(release.config_file)
    _check_config(model_config, origin)
    the_plan = plan(scheme, model_config, shapes)
    for target in the_plan.targets:
        var = bundle.variables[target.tf_name]
        if var.dtype not in _FLOAT_DTYPES:
            raise CheckpointError(f"{bundle.index_path}: variable {var.name!r} is {var.dtype}, expected a float type")
    vocab_data = read_vocab(release.vocab_file, compact=scheme == "google-albert")
    if len(vocab_data.tokens) > model_config.vocab_size:
        raise CheckpointError(f"{release.vocab_file}: {len(vocab_data.tokens)} tokens, but the model has "
                              f"vocab_size {model_config.vocab_size}; this vocab belongs to another model")
    if len(vocab_data.tokens) + (len(vocab_data.duplicates) if vocab_data.compact else 0) < model_config.vocab_size:
        log.warning("%s: %d tokens for vocab_size %d; ids above %d are never produced", release.vocab_file,
                    len(vocab_data.tokens), model_config.vocab_size, len(vocab_data.tokens) - 1)
    log.info("converting %s (%s, %d variables, %d skipped: %s)", release.prefix, scheme, len(bundle),
             len(the_plan.skipped_names), the_plan.skipped or "none")

    out = Path(out)
    tmp = _prepare_out(out)
    try:
        input_names = [bundle.index_path.name] + [p.name for p in bundle.data_files]
        input_names += [p.name for p in (release.config_file, release.vocab_file) if p is not None]
        with concurrent.futures.ThreadPoolExecutor(1) as pool:  # hash the inputs while converting
            inputs_future = pool.submit(_hash_inputs, bundle, release)
            metadata_future = pool.submit(lambda: _metadata(scheme, architecture, inputs_future.result(), []))
            params = _write_weights(tmp / "model.safetensors", bundle, the_plan, dtype,
                                    _metadata(scheme, architecture, None, input_names), metadata_future)
            inputs = inputs_future.result()
        (tmp / "config.json").write_text(json.dumps(model_config.to_dict(), indent=2) + "\n", encoding="utf-8")
        (tmp / "vocab.txt").write_text(vocab_data.text(), encoding="utf-8")
        receipt = _receipt(scheme, model_config, the_plan, inputs, tmp, params, dtype, vocab_data, source_sha256)
        (tmp / "receipt.json").write_text(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        if out.exists():  # an empty directory (checked above)
            out.rmdir()
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bundle.close()
    log.info("wrote %s (%d parameters)", out, params)
    return out


def _receipt(scheme: str, config: ModelConfig, the_plan: Plan, inputs: list[dict[str, Any]], out: Path,
             params: int, dtype: str | None, vocab: Vocab, source_sha256: str | None) -> dict[str, Any]:
    from zoo import __version__

    outputs = [file_record(out / name, role) for name, role in
               (("model.safetensors", "weights"), ("config.json", "config"), ("vocab.txt", "vocab"))]
    return {
        "zoo_version": __version__,
        "converter_version": CONVERTER_VERSION,
        "scheme": scheme,
        "architecture": config.architecture,
        "source_sha256": source_sha256,
        "inputs": inputs,
        "outputs": outputs,
        "dtype": dtype or "as stored",
        "parameters": params,
        "tensors": len(the_plan.targets),
        "heads": the_plan.heads,
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


def ensure_converted(snapshot_dir: str | os.PathLike[str], *, manifest_config: ModelConfig, scheme: str,
                     checkpoint_prefix: str, vocab: str, source_sha256: str) -> Path:
    """The converted directory for a pulled TF snapshot, converting it on first use.

    The result lives in ``zoo.cache.converted_dir(source_sha256, CONVERTER_VERSION)``; a file lock serializes
    concurrent callers and a complete directory (renamed into place atomically) is reused as is, so a second
    call never converts again while a new converter version converts afresh.
    """
    from zoo import cache
    from zoo.converters.ondemand import convert_once

    snapshot = Path(snapshot_dir)
    return convert_once(
        cache.converted_dir(source_sha256, CONVERTER_VERSION),
        lambda target: _convert(snapshot / checkpoint_prefix, target, scheme=scheme, config=manifest_config,
                                vocab=snapshot / vocab, dtype=None, source_sha256=source_sha256),
        what=str(snapshot))

__all__ = ["CONVERTER_VERSION", "SCHEMES", "convert", "ensure_converted", "load_config", "locate"]
