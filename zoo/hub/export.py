"""``zoo export``: a registry model, a converted directory or a TF release → a folder transformers loads.

The folder holds ``config.json`` (``model_type`` albert|bert), ``model.safetensors`` with transformers'
parameter names (pretraining heads included, so ``AutoModelForMaskedLM`` works), ``vocab.txt``,
``tokenizer_config.json`` + ``special_tokens_map.json`` (``BertTokenizer``, so ``AutoTokenizer`` works for
Chinese ALBERT too) and a ``README.md`` model card. Renaming and the brightmart → ALBERT rewrite live in
:mod:`zoo.converters.hf_names`; this module gathers the inputs and writes the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import cache
from zoo.config import ModelConfig
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.hub.card import Provenance, model_card, tokenizer_files

if TYPE_CHECKING:
    import torch

    from zoo.registry import Manifest

log = logging.getLogger("zoo.hub")

FORMATS = ("hf",)
WEIGHTS, CONFIG, VOCAB, RECEIPT = "model.safetensors", "config.json", "vocab.txt", "receipt.json"


@dataclasses.dataclass(frozen=True)
class Weights:
    """A directory of weights in zoo's layout (canonical names) or transformers' layout, with what it is."""

    path: Path
    config: ModelConfig
    layout: str  # "zoo" or "transformers"
    provenance: Provenance
    lowercase: bool = True
    strip_accents: bool | None = None


def export(name_or_path: str | os.PathLike[str] | Manifest, out_dir: str | os.PathLike[str], *, format: str = "hf",
           source: int | None = None, offline: bool | None = None, repo_id: str | None = None) -> Path:
    """Write a transformers-ready folder for ``name_or_path`` into ``out_dir`` (new or empty); returns it.

    ``name_or_path``: a registry name (or :class:`~zoo.registry.Manifest`), a directory written by
    ``zoo convert`` (or ``zoo export``), or an upstream TF release directory (converted on the fly).
    ``source``/``offline`` apply to registry names; ``repo_id`` is the repo named in the model card.
    brightmart pre-LN models have no transformers equivalent and raise :class:`~zoo.errors.UnsupportedError`.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())):
        raise UsageError(f"{out}: already exists and is not empty", hint="remove it or choose another directory")
    with _scratch() as scratch:
        weights = locate(name_or_path, scratch, source=source, offline=offline)
        return write_hf_folder(weights, out, repo_id=repo_id)


# ------------------------------------------------------------------------------------------ the inputs
def locate(name_or_path: str | os.PathLike[str] | Manifest, scratch: Path, *, source: int | None = None,
           offline: bool | None = None) -> Weights:
    """Find (pulling and converting into ``scratch`` where needed) the weights behind ``name_or_path``."""
    if not isinstance(name_or_path, (str, os.PathLike)):  # a Manifest already looked up
        return from_registry(name_or_path, source=source, offline=offline)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if (path / WEIGHTS).is_file() and (path / CONFIG).is_file():
            return read_weights_dir(path, Provenance(name=path.resolve().name))
        from zoo.converters import convert

        log.info("converting the TF release %s", path)
        converted = convert(path, scratch / "converted")
        return read_weights_dir(converted, Provenance(name=path.resolve().name, origin=str(path.resolve())))
    if isinstance(name_or_path, Path) or os.sep in str(name_or_path) or "/" in str(name_or_path):
        raise NotFoundError(f"{name_or_path} is not a directory",
                            hint="pass a registry name, a directory made by zoo convert, or a TF release directory")
    from zoo.registry import get_manifest

    return from_registry(get_manifest(str(name_or_path)), source=source, offline=offline)


def from_registry(manifest: Manifest, *, source: int | None = None, offline: bool | None = None) -> Weights:
    """Pull a registered model (verified by the resolver) and convert it to zoo's layout on first use."""
    from zoo import resolver

    pulled = resolver.resolve(manifest, source=source, offline=offline)
    src = pulled.source
    root = Path(pulled.path)
    if src.format == "tf-checkpoint":  # converted once into the cache, shared with zoo.load
        from zoo.converters import ensure_converted

        directory = Path(ensure_converted(
            root, manifest_config=manifest.config, scheme=str(src.scheme),
            checkpoint_prefix=src.find_checkpoint(root).relative_to(root).as_posix(),
            vocab=src.find_vocab(root).relative_to(root).as_posix(), source_sha256=pulled.sha256))
    else:
        from zoo.fetch import hf

        directory = hf.ensure_converted(root, manifest=manifest, source=src)
    prov = Provenance(name=manifest.name, description=manifest.description, family=manifest.family,
                      language=manifest.language, license=manifest.license, homepage=manifest.homepage,
                      citation=manifest.citation, origin=src.label, source_sha256=pulled.sha256)
    weights = read_weights_dir(directory, prov)  # converted with the manifest's config
    return dataclasses.replace(weights, lowercase=manifest.tokenizer.lowercase,
                               strip_accents=manifest.tokenizer.strip_accents)


def read_weights_dir(path: Path, prov: Provenance) -> Weights:
    """A directory with ``model.safetensors`` + ``config.json`` (+ ``vocab.txt``): zoo's layout or transformers'."""
    data = _read_json(path / CONFIG)
    receipt = _read_json(path / RECEIPT) if (path / RECEIPT).is_file() else None
    from zoo.converters import hf_names

    try:
        if "architecture" in data:
            config, layout = ModelConfig.from_dict(data), "zoo"
        elif "model_type" in data:
            config, layout = hf_names.config_from_transformers(data), "transformers"
        else:
            raise CheckpointError(f"{path / CONFIG}: neither zoo's config (no 'architecture') nor transformers' "
                                  "(no 'model_type')", hint="pass a directory written by zoo convert or zoo export")
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path / CONFIG}: unexpected or missing keys ({exc})") from None
    problems = config.problems()
    if problems:
        raise CheckpointError(f"{path / CONFIG}: {problems[0][0]}: {problems[0][1]}")
    if not (path / VOCAB).is_file():
        raise NotFoundError(f"{path / VOCAB} does not exist", hint="the vocab belongs next to the weights")
    lowercase, strip_accents = _tokenizer_options(path, receipt)
    if receipt is not None and prov.receipt is None:
        prov = dataclasses.replace(prov, receipt=receipt)
    return Weights(path, config, layout, prov, lowercase, strip_accents)


def _tokenizer_options(path: Path, receipt: dict[str, Any] | None) -> tuple[bool, bool | None]:
    tok_config = path / "tokenizer_config.json"
    if tok_config.is_file():
        data = _read_json(tok_config)
        return bool(data.get("do_lower_case", True)), data.get("strip_accents")
    tokenizer = (receipt or {}).get("tokenizer")
    if isinstance(tokenizer, dict) and "lowercase" in tokenizer:
        return bool(tokenizer["lowercase"]), tokenizer.get("strip_accents")
    return True, None  # Chinese vocabularies are uncased; registry names carry the manifest's setting


# ------------------------------------------------------------------------------------------- the output
def canonical_state(weights: Weights) -> dict[str, torch.Tensor]:
    """The weights under zoo's canonical names."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        state = load_file(str(weights.path / WEIGHTS))
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"{weights.path / WEIGHTS} is not a readable safetensors file: {exc}") from None
    if weights.layout == "transformers":
        from zoo.converters import hf_names

        state = hf_names.from_transformers(state, weights.config)
    return state


def pick_head(state: dict[str, Any]) -> str:
    """``pretraining`` when the checkpoint has MLM + SOP/NSP heads, ``mlm`` with MLM only, else ``base``."""
    if "mlm.bias" in state:
        return "pretraining" if "seq_relationship.weight" in state else "mlm"
    return "base"


def write_hf_folder(weights: Weights, out: Path, *, repo_id: str | None = None) -> Path:
    """Write the transformers folder for ``weights`` into ``out`` (atomically: staged, then renamed)."""
    from safetensors.torch import save_file

    from zoo.converters import hf_names
    from zoo.fetch.hf import check_shapes

    config = weights.config
    hf_names.hf_equivalent(config)  # pre-LN brightmart: UnsupportedError before any work
    state = canonical_state(weights)
    check_shapes(state, config, str(weights.path / WEIGHTS))
    head = pick_head(state)
    if head != "pretraining":
        log.warning("%s has %s: exported without the pretraining heads it lacks", weights.path,
                    "no SOP/NSP head" if head == "mlm" else "no MLM head (AutoModelForMaskedLM will not load it)")
    tensors = hf_names.to_transformers(state, config, head)
    for tied in _tied_keys(tensors):
        del tensors[tied]  # tied to the word embeddings / predictions.bias; transformers re-ties them on load
    tensors = {name: t.contiguous() for name, t in tensors.items()}

    vocab = (weights.path / VOCAB).read_text(encoding="utf-8")
    tokens = vocab.split("\n")
    hf_config = hf_names.transformers_config(config, head)
    hf_config.update(_special_ids(tokens), tie_word_embeddings=True)
    hf_config["dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")

    out.parent.mkdir(parents=True, exist_ok=True)
    if out.exists():
        out.rmdir()  # empty (checked by the caller)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(hf_config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / VOCAB).write_text(vocab, encoding="utf-8")
        for name, text in tokenizer_files(config, lowercase=weights.lowercase,
                                          strip_accents=weights.strip_accents).items():
            (tmp / name).write_text(text, encoding="utf-8")
        hashes = {p.name: cache.hash_file(p)[0] for p in sorted(tmp.iterdir())}
        card = model_card(weights.provenance, config, hf_config, hashes, repo_id=repo_id)
        (tmp / "README.md").write_text(card, encoding="utf-8")
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("exported %s (%s, %s) to %s", weights.provenance.name, hf_config["architectures"][0],
             config.architecture, out)
    return out


def _tied_keys(tensors: dict[str, Any]) -> list[str]:
    return [name for name in tensors if name.endswith(("predictions.decoder.weight", "predictions.decoder.bias"))]


def _special_ids(tokens: list[str]) -> dict[str, int]:
    ids = {}
    for key, token in (("pad_token_id", "[PAD]"), ("bos_token_id", "[CLS]"), ("eos_token_id", "[SEP]")):
        if token in tokens:
            ids[key] = tokens.index(token)
    if "pad_token_id" not in ids:
        raise CheckpointError("the vocab has no [PAD] token", hint="a BERT/ALBERT WordPiece vocab.txt has [PAD]")
    return ids


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


@contextlib.contextmanager
def _scratch() -> Iterator[Path]:
    path = cache.staging_dir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
