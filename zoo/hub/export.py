"""``zoo export``: a registry model, a converted directory or a TF release → a folder transformers loads.

The folder holds ``config.json`` (``model_type`` albert|bert), ``model.safetensors`` with transformers'
parameter names (pretraining heads included, so ``AutoModelForMaskedLM`` works), ``vocab.txt``,
``tokenizer_config.json`` + ``special_tokens_map.json`` (``BertTokenizer``, so ``AutoTokenizer`` works for
Chinese ALBERT too) and a ``README.md`` model card. Renaming and the brightmart → ALBERT rewrite live in
:mod:`zoo.converters.hf_names`; this module gathers the inputs and writes the files.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import cache
from zoo.config import ModelConfig
from zoo.converters.ondemand import CONFIG, RECEIPT, VOCAB, WEIGHTS
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.hub.card import Provenance, model_card, tokenizer_files

if TYPE_CHECKING:
    import torch

    from zoo.registry import Manifest

log = logging.getLogger("zoo.hub")

FORMATS = ("hf",)


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
    return write_hf_folder(locate(name_or_path, source=source, offline=offline), out, repo_id=repo_id)


# ------------------------------------------------------------------------------------------ the inputs
def locate(name_or_path: str | os.PathLike[str] | Manifest, *, source: int | None = None,
           offline: bool | None = None) -> Weights:
    """The weights behind ``name_or_path``, pulled and converted (once, into the cache) where needed."""
    from zoo.converters.ondemand import resolve_weights

    resolved = resolve_weights(name_or_path, source=source, offline=offline)
    manifest, pulled = resolved.manifest, resolved.pulled
    if manifest is None:
        given = Path(name_or_path).expanduser().resolve()
        return read_weights_dir(resolved.path, Provenance(name=given.name, origin=None if resolved.path == given
                                                          else str(given)))
    prov = Provenance(name=manifest.name, description=manifest.description, family=manifest.family,
                      language=manifest.language, license=manifest.license, homepage=manifest.homepage,
                      citation=manifest.citation, origin=pulled.source.label if pulled else None,
                      source_sha256=pulled.sha256 if pulled else None)
    weights = read_weights_dir(resolved.path, prov)  # converted with the manifest's config
    return dataclasses.replace(weights, lowercase=manifest.tokenizer.lowercase,
                               strip_accents=manifest.tokenizer.strip_accents)


def read_weights_dir(path: Path, prov: Provenance) -> Weights:
    """A directory with ``model.safetensors`` + ``config.json`` + ``vocab.txt``: zoo's layout or transformers'."""
    from zoo.loader import read_config, read_json, tokenizer_options

    config, layout = read_config(path)
    if not (path / VOCAB).is_file():
        raise NotFoundError(f"{path / VOCAB} does not exist", hint="the vocab belongs next to the weights")
    if prov.receipt is None and (path / RECEIPT).is_file():
        prov = dataclasses.replace(prov, receipt=read_json(path / RECEIPT))
    return Weights(path, config, layout, prov, *tokenizer_options(path))


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
    from zoo.converters.transformers import check_shapes

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
