"""``zoo export``: a registry model, a converted directory or a TF release → a folder transformers loads.

The folder holds ``config.json`` (``model_type`` albert|bert), ``model.safetensors`` with transformers'
parameter names (pretraining heads included, so ``AutoModelForMaskedLM`` works), ``vocab.txt``,
``tokenizer_config.json`` + ``special_tokens_map.json`` (``BertTokenizer``, so ``AutoTokenizer`` works for
Chinese ALBERT too), a ``README.md`` model card and zoo's ``receipt.json``. Renaming and the brightmart → ALBERT
rewrite live in :mod:`zoo.converters.hf_names`; the folder is written through :mod:`zoo.converters.modeldir`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import ModelConfig, heads_in, present_heads
from zoo.converters.modeldir import (
    CONFIG,
    VOCAB,
    WEIGHTS,
    check_output_dir,
    read_config,
    read_directory_vocab,
    read_receipt,
    staged_output,
    tokenizer_options,
)
from zoo.converters.safetensors_out import write_state
from zoo.errors import CheckpointError, UsageError, ZooError
from zoo.hub.card import Provenance, made_from, model_card, public, tokenizer_files
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting
from zoo.registry import Manifest, get_manifest
from zoo.weights import Model, Prepared, prepare

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zoo.hub")

FORMATS = ("hf", "tf")
#: The evaluation a fine-tuning run may leave next to its weights (its receipt's ``results`` is read first).
RESULTS = "results.json"


@dataclasses.dataclass(frozen=True)
class Weights:
    """A directory of weights in zoo's layout (canonical names) or transformers' layout, with what it is."""

    path: Path
    config: ModelConfig
    layout: str  # "zoo" or "transformers"
    provenance: Provenance
    lowercase: bool = True
    strip_accents: bool | None = None


@dataclasses.dataclass(frozen=True, eq=False)
class Exported:
    """What :func:`export` wrote: the folder, where its weights came from, and each file's sha256.

    Usable wherever a path is (``os.fspath(exported)`` is the folder). zoo 0.1 returned the folder's
    :class:`~pathlib.Path`; code that still treats the result as one works for this release, with a
    DeprecationWarning: use ``.path``.
    """

    path: Path
    format: str
    provenance: Provenance
    files: dict[str, str]

    def __fspath__(self) -> str:
        return str(self.path)

    def __str__(self) -> str:
        return str(self.path)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Exported):
            return (self.path, self.format, self.provenance, self.files) == \
                (other.path, other.format, other.provenance, other.files)
        if isinstance(other, os.PathLike):
            _deprecated_path_use()
            return self.path == Path(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.path)

    def __truediv__(self, other: str | os.PathLike[str]) -> Path:
        _deprecated_path_use()
        return self.path / other

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        _deprecated_path_use()
        return getattr(self.path, name)


def _deprecated_path_use() -> None:
    import warnings

    warnings.warn("zoo.export() returns an Exported record; use its .path for the folder", DeprecationWarning,
                  stacklevel=3)


def export(model: Model, out_dir: str | os.PathLike[str], *, format: str = "hf", source: int | None = None,
           offline: bool | None = None, repo_id: str | None = None,
           manifests: Sequence[str | os.PathLike[str]] = (), progress: Progress = None,
           scheme: str | None = None, global_step: int | None = None) -> Exported:
    """Write a transformers-ready folder for ``model`` into ``out_dir`` (a new or empty directory outside zoo's
    cache) — or, with ``format="tf"``, an upstream TensorFlow release (checkpoint, upstream config, vocab; see
    :mod:`zoo.converters.tf_export`) under ``scheme`` (default: the one the model came from) with TF's
    ``global_step`` variable: ``global_step``, else the steps of a model zoo trained, else 0.

    ``model``: a registry name (or :class:`~zoo.registry.Manifest`), a directory written by ``zoo convert``,
    ``zoo export`` or ``zoo pretrain``, a transformers folder or an upstream TF release directory (converted on
    the fly) — the same rule as :func:`zoo.load`. ``source``/``offline`` apply to registry names; ``repo_id`` is
    the repo named in the model card. brightmart pre-LN models have no transformers equivalent and raise
    :class:`~zoo.errors.UnsupportedError`.
    """
    if format not in FORMATS:
        raise UsageError(f"unknown export format {format!r}", hint=f"choose one of {', '.join(FORMATS)}")
    if format != "tf" and (scheme is not None or global_step is not None):
        raise UsageError("scheme and global_step apply to format 'tf'")
    out = check_output_dir(out_dir)
    with reporting(progress) as emit:
        prepared = prepare(model, source=source, offline=offline, manifests=manifests, progress=emit)
        return write_export(weights_of(prepared, manifests), out, format=format, repo_id=repo_id, scheme=scheme,
                            global_step=global_step, emit=emit)


def write_export(weights: Weights, out: Path, *, format: str = "hf", repo_id: str | None = None,
                 scheme: str | None = None, global_step: int | None = None,
                 emit: ProgressCallback | None = None) -> Exported:
    """The export of ``weights`` into ``out`` (new or empty; :func:`export` checks a folder the user names, ``zoo
    mirror`` writes into zoo's own staging)."""
    if emit is not None:
        emit(ProgressEvent("note", weights.provenance.name, message=f"writing {out}"))
    if format == "tf":
        from zoo.converters.tf_export import export_tf

        step = global_step if global_step is not None else trained_steps(weights.provenance.made_from)
        files = export_tf(weights.path, out, config=weights.config, layout=weights.layout, scheme=scheme,
                          global_step=step, source=weights.provenance.origin,
                          source_sha256=weights.provenance.source_sha256, receipt=weights.provenance.receipt)
        return Exported(out, "tf", weights.provenance, files)
    return write_hf_folder(weights, out, repo_id=repo_id)


def trained_steps(made: Mapping[str, Any] | None) -> int:
    """The ``global_step`` of an export: the steps of a model zoo trained, else 0 (every upstream release carries
    the variable, and ``tf.train.Saver`` restores of graphs that have one need it)."""
    steps = (made or {}).get("steps")
    return steps if isinstance(steps, int) and (made or {}).get("kind") in ("pretraining", "finetune") else 0


def weights_of(prepared: Prepared, manifests: Sequence[str | os.PathLike[str]] = ()) -> Weights:
    """The weights of a prepared directory with their provenance: the manifest's facts when named by the
    registry; else what the folder's receipt says it is, with the facts of its base model when the registry
    knows it (a model zoo trained carries its base model's license)."""
    manifest, pulled = prepared.manifest, prepared.pulled
    casing = prepared.tokenizer_options()
    if manifest is None:
        own = read_receipt(prepared.release) if prepared.release is not None else None
        receipt = own if own is not None else read_receipt(prepared.path)
        made = made_from(receipt, prepared.name)
        about = made.get("about") or _about(_registered_base(receipt, manifests))
        if about:
            made["about"] = about
        prov = Provenance(name=prepared.name, family=about.get("family", ""), language=about.get("language"),
                          license=about.get("license"), homepage=about.get("homepage"),
                          citation=about.get("citation"), source_sha256=made.get("source_sha256"),
                          receipt=receipt, made_from=made)
        return read_weights_dir(prepared.path, prov, casing=casing)
    receipt = read_receipt(prepared.path)
    origin = pulled.source.label if pulled else None
    made = {**made_from(receipt, manifest.name), "kind": "release", "model": manifest.name, "source": public(origin),
            "source_sha256": pulled.sha256 if pulled else None, "about": _about(manifest)}
    prov = Provenance(name=manifest.name, description=manifest.description, family=manifest.family,
                      language=manifest.language, license=manifest.license, homepage=manifest.homepage,
                      citation=manifest.citation, origin=origin, source_sha256=pulled.sha256 if pulled else None,
                      receipt=receipt, made_from=made)
    # converted with the manifest's config; the casing is the manifest's
    return read_weights_dir(prepared.path, prov, casing=casing)


def _registered_base(receipt: Mapping[str, Any] | None, manifests: Sequence[str | os.PathLike[str]]) -> Manifest | None:
    """The registry's manifest of the model a trained folder started from: the base's name must be registered and
    the source it was pulled from one of that manifest's (a folder named like a model is not that model)."""
    base = (receipt or {}).get("base") or {}
    if not isinstance(base, Mapping) or not base.get("model"):
        return None
    try:
        manifest = get_manifest(str(base["model"]), manifests=manifests)
    except ZooError:
        return None
    return manifest if base.get("source") in {s.label for s in manifest.sources} else None


def _about(manifest: Manifest | None) -> dict[str, Any]:
    """The facts of a registered model an export carries on (into its card, and into its receipt's ``made_from``
    for an export of the export)."""
    if manifest is None:
        return {}
    return {k: v for k, v in (("license", manifest.license), ("homepage", manifest.homepage),
                              ("language", manifest.language), ("family", manifest.family),
                              ("citation", manifest.citation)) if v}


def read_weights_dir(path: Path, prov: Provenance, *, casing: tuple[bool, bool | None] | None = None) -> Weights:
    """A directory with ``model.safetensors`` + ``config.json`` + ``vocab.txt``: zoo's layout or transformers'.
    ``casing`` (``lowercase``, ``strip_accents``): the tokenizer's, when known; else the directory's own
    (:func:`zoo.converters.modeldir.tokenizer_options`)."""
    config, layout = read_config(path)
    read_directory_vocab(path, config)  # one line per embedding row, or a CheckpointError before any work
    if prov.receipt is None:
        receipt = read_receipt(path)
        if receipt is not None:
            prov = dataclasses.replace(prov, receipt=receipt)
    if casing is None:
        casing = tokenizer_options(path, receipt=prov.receipt or {})
    return Weights(path, config, layout, prov, *casing)


# ------------------------------------------------------------------------------------------- the output
def canonical_state(weights: Weights) -> dict[str, torch.Tensor]:
    """The weights under zoo's canonical names."""
    from zoo.converters.transformers import read_state

    state = read_state(weights.path / WEIGHTS, "safetensors")
    if weights.layout == "transformers":
        from zoo.converters import hf_names

        state = hf_names.from_transformers(state, weights.config)
    return state


def write_hf_folder(weights: Weights, out: Path, *, repo_id: str | None = None) -> Exported:
    """Write the transformers folder for ``weights`` into ``out`` (atomically: staged, then renamed)."""
    from zoo.converters import hf_names
    from zoo.converters.transformers import check_shapes

    config = _with_classifier_dropout(weights.config, weights.provenance.receipt)
    hf_names.hf_equivalent(config)  # pre-LN brightmart: UnsupportedError before any work
    state = canonical_state(weights)
    check_shapes(state, config, str(weights.path / WEIGHTS))
    head = _export_head(config, state, weights.path)
    tensors = hf_names.to_transformers(state, config, head)
    for tied in _tied_keys(tensors):
        del tensors[tied]  # tied to the word embeddings / predictions.bias; transformers re-ties them on load
    vocab = (weights.path / VOCAB).read_text(encoding="utf-8")
    hf_config = hf_names.transformers_config(config, head)
    hf_config.update(_special_ids(vocab.split("\n")), tie_word_embeddings=True)
    hf_config["dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")

    with staged_output(out, kind="export") as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, tensors, {"format": "pt"})
        staged.write_json(CONFIG, hf_config, "config")
        staged.write_text(VOCAB, vocab, "vocab")
        for name, text in tokenizer_files(config, lowercase=weights.lowercase,
                                          strip_accents=weights.strip_accents).items():
            staged.write_text(name, text, "tokenizer")
        hashes = {name: item["sha256"] for name, item in staged.outputs.items()}
        prov = _with_results(weights)
        staged.write_text("README.md", model_card(prov, config, hf_config, hashes, repo_id=repo_id,
                                                  folder=out.name), "model card")
        staged.receipt.update({"format": "hf", "architecture": config.architecture,
                               "transformers_class": hf_config["architectures"][0],
                               "task": config.task, "labels": list(config.labels) if config.labels else None,
                               "source": prov.origin, "source_sha256": prov.source_sha256,
                               "made_from": prov.made_from})
        files = {name: item["sha256"] for name, item in staged.outputs.items()}
    log.info("exported %s (%s, %s) to %s", weights.provenance.name, hf_config["architectures"][0],
             config.architecture, out)
    return Exported(out, "hf", prov, files)


def _export_head(config: ModelConfig, state: Mapping[str, Any], path: Path) -> str | None:
    """The transformers head of an export: a fine-tuned model's task class (any pretraining heads it still has
    stay out: a task class has none), else the pretraining heads the weights have."""
    if config.task is not None:
        if present_heads(state):
            log.info("%s: the pretraining heads are left out of the %s export", path, config.task)
        return config.task
    head = heads_in(present_heads(state))
    if head != "pretraining":
        log.warning("%s has %s: exported without the pretraining heads it lacks", path,
                    "no SOP/NSP head" if head == "mlm" else "no MLM head (AutoModelForMaskedLM will not load it)")
    return head


def _with_results(weights: Weights) -> Provenance:
    """The provenance of a fine-tuned model with the evaluation its run recorded (``results`` in its receipt, else
    a ``results.json`` next to the weights; read defensively: anything but a JSON object is no results)."""
    prov = weights.provenance
    made = dict(prov.made_from or {})
    if weights.config.task is None or isinstance(made.get("results"), Mapping):
        return prov
    results = (prov.receipt or {}).get("results")
    if not isinstance(results, Mapping) and (weights.path / RESULTS).is_file():
        try:
            results = json.loads((weights.path / RESULTS).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as exc:
            log.warning("%s is not readable JSON (%s): the model card shows no results", weights.path / RESULTS, exc)
    if not isinstance(results, Mapping):
        return prov
    return dataclasses.replace(prov, made_from={**made, "results": dict(results)})


def _with_classifier_dropout(config: ModelConfig, receipt: Mapping[str, Any] | None) -> ModelConfig:
    """``config`` with the classifier dropout a fine-tuning run recorded in its receipt (``classifier_dropout``)
    when its config.json has none: what transformers' ``classifier_dropout_prob`` must say for that classifier."""
    value = (receipt or {}).get("classifier_dropout")
    if config.classifier_dropout_prob is not None or not isinstance(value, (int, float)):
        return config
    return dataclasses.replace(config, classifier_dropout_prob=float(value))


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


__all__ = ["FORMATS", "Exported", "Weights", "export", "read_weights_dir", "trained_steps", "weights_of",
           "write_export", "write_hf_folder"]
