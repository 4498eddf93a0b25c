"""``zoo.init_model``: a new model, initialised as upstream initialises one, written as a zoo model directory.

The architecture comes from an upstream ``albert_config.json``/``bert_config.json``, zoo's (or transformers')
``config.json``, or a registered model's manifest (its architecture only: nothing is downloaded). The vocab comes
from a vocab file, from another model (``vocab_from``: a registry name — downloaded once — or a local
directory), or is learned from the user's text (``train_vocab``: WordPiece with BERT's rules,
:func:`zoo.tokenizer.train_wordpiece`); the config's ``vocab_size`` is set from it.

The weights are drawn as the TF code draws them (:meth:`zoo.models.encoder.Encoder.init_weights`), with the MLM
and SOP/NSP heads, and the directory is what ``zoo convert`` writes (:mod:`zoo.converters.modeldir`; receipt kind
``init``), so ``zoo.load``, ``zoo pretrain``, ``zoo run`` and ``zoo export`` take it — no network, no
hand-made manifest.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo._fs import sha256_file
from zoo.config import PRETRAINING_HEADS, ModelConfig, present_heads
from zoo.converters.modeldir import (
    CONFIG,
    VOCAB,
    WEIGHTS,
    check_output_dir,
    missing_file,
    read_json,
    staged_output,
)
from zoo.converters.safetensors_out import write_state
from zoo.converters.tf import parse_config
from zoo.converters.vocab import looks_cased, read_vocab
from zoo.errors import NotFoundError, UsageError
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting
from zoo.registry import Manifest, get_manifest
from zoo.tokenizer import SPECIAL_TOKENS, Tokenizer, train_wordpiece
from zoo.weights import Model, looks_like_path, prepare

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zoo.scratch")

#: The seed of ``zoo init`` (and ``zoo pretrain``) unless one is given.
DEFAULT_SEED = 12345
INIT_SCHEME = ("truncated normal (within 2 standard deviations, as tf.truncated_normal_initializer) with "
               "initializer_range for every weight matrix and embedding; zero biases; LayerNorm weight 1, bias 0")
ConfigInput = ModelConfig | Manifest | str | os.PathLike[str]


@dataclasses.dataclass(frozen=True)
class _Source:
    """Something read to make the model: a config or a vocab, for the receipt."""

    record: dict[str, Any]  # how it was named and read (receipt "config" / "vocab")
    inputs: list[dict[str, Any]]  # files read: path, role, size, sha256 (receipt "inputs")


@dataclasses.dataclass(frozen=True)
class _Vocab:
    tokens: list[str]
    lowercase: bool
    strip_accents: bool | None
    source: _Source
    origin: str  # for messages


def init_model(config: ConfigInput, *, out: str | os.PathLike[str], vocab: str | os.PathLike[str] | None = None,
               vocab_from: Model | None = None, train_vocab: Sequence[str | os.PathLike[str]] = (),
               vocab_size: int | None = None, seed: int = DEFAULT_SEED, heads: str | None = "pretraining",
               source: int | None = None, offline: bool | None = None,
               manifests: Sequence[str | os.PathLike[str]] = (), progress: Progress = None) -> Path:
    """Write a new, randomly initialised model into ``out`` (a new or empty directory outside zoo's cache); returns
    ``out`` as an absolute path (what every zoo command accepts as a path).

    ``config``: a :class:`~zoo.config.ModelConfig`, a :class:`~zoo.registry.Manifest`, a registry name (its
    architecture), or a path — a string ending in ``.json`` or following the names-vs-paths rule — to an upstream
    ``albert_config.json``/``bert_config.json`` (the architecture is told from its keys), zoo's or transformers'
    ``config.json``, or a model directory holding one. The vocab, exactly one of: ``vocab`` (a vocab file),
    ``vocab_from`` (a model: registry name, ``Manifest`` or directory — ``source``/``offline``/``manifests`` apply
    as in :func:`zoo.load`), ``train_vocab`` (text files) with ``vocab_size``. ``seed`` makes the weights
    reproducible (same torch version); ``heads``: ``"pretraining"`` (MLM + SOP/NSP), ``"mlm"`` or ``None``.
    """
    out_path = Path(out).expanduser().absolute()
    if isinstance(train_vocab, (str, os.PathLike)):  # one file
        train_vocab = [train_vocab]
    _check_options(vocab, vocab_from, train_vocab, vocab_size, heads)
    check_output_dir(out_path)
    label = out_path.name or str(out_path)
    with reporting(progress) as emit:
        model_config, config_source = read_model_config(config, manifests=manifests)
        words = _vocab(vocab, vocab_from, train_vocab, vocab_size, source=source, offline=offline,
                       manifests=manifests, emit=emit)
        model_config = _sized(model_config, config_source.record["vocab_size"], len(words.tokens), emit, label)
        emit(ProgressEvent("note", label, message=f"initialising {model_config.architecture} "
                                                  f"({model_config.num_hidden_layers} layers, hidden "
                                                  f"{model_config.hidden_size}), seed {seed}"))
        state = initial_weights(model_config, heads=heads, seed=seed)
        _write(out_path, model_config, state, words, config_source, seed)
        emit(ProgressEvent("done", label))
    log.info("wrote %s", out_path)
    return out_path


def _check_options(vocab: object, vocab_from: object, train_vocab: Sequence[object], vocab_size: int | None,
                   heads: str | None) -> None:
    given = [name for name, value in (("--vocab", vocab), ("--vocab-from", vocab_from),
                                      ("--train-vocab", list(train_vocab))) if value]
    if len(given) != 1:
        what = "no vocab" if not given else f"{' and '.join(given)} together"
        raise UsageError(f"{what}: give the vocab one way",
                         hint="--vocab vocab.txt, --vocab-from MODEL, or --train-vocab TEXT... --vocab-size N")
    if given == ["--train-vocab"] and vocab_size is None:
        raise UsageError("--train-vocab needs --vocab-size N",
                         hint="the number of tokens to learn, e.g. 8000 (BERT's Chinese vocab has 21128)")
    if vocab_size is not None and given != ["--train-vocab"]:
        raise UsageError("--vocab-size applies to --train-vocab only",
                         hint="a given vocab keeps its size; the model's vocab_size follows it")
    if heads not in (None, *PRETRAINING_HEADS):
        raise UsageError(f"heads={heads!r} cannot be initialised here",
                         hint='use "pretraining", "mlm" or None; task heads are added by zoo.load(heads=...)')


# ------------------------------------------------------------------------------------------------ config
def read_model_config(config: ConfigInput, *,
                      manifests: Sequence[str | os.PathLike[str]] = ()) -> tuple[ModelConfig, _Source]:
    """The architecture ``config`` names (see :func:`init_model`) and how it was read. Its ``vocab_size`` is the
    source's (1 when a config file has none): the caller sets it from the vocab."""
    if isinstance(config, ModelConfig):  # checked when it was made
        return config, _Source({"source": "ModelConfig", "vocab_size": config.vocab_size}, [])
    if isinstance(config, Manifest):
        return config.config, _Source({"source": "registry", "model": config.name,
                                       "vocab_size": config.config.vocab_size}, [])
    if not isinstance(config, (str, os.PathLike)) or not str(config).strip():
        raise UsageError(f"expected a config file, a registry name or a ModelConfig, got {config!r}")
    text = os.fspath(config)
    if isinstance(config, os.PathLike) or looks_like_path(text) or text.endswith(".json"):
        return _config_file(Path(text).expanduser())
    try:
        manifest = get_manifest(text, manifests=manifests)
    except NotFoundError as exc:
        if Path(text).exists():
            raise NotFoundError(exc.message, hint=f"to use the file {text} here, write ./{text}") from None
        raise
    return read_model_config(manifest)


def _config_file(path: Path) -> tuple[ModelConfig, _Source]:
    """An upstream, zoo or transformers config JSON, or the ``config.json`` of a model directory."""
    if path.is_dir():
        if not (path / CONFIG).is_file():
            raise NotFoundError(f"{path} holds no {CONFIG}",
                                hint="pass the config file itself (albert_config.json, bert_config.json)")
        path = path / CONFIG
    data = read_json(path)
    given = data.get("vocab_size")
    config = parse_config(data if given is not None else {**data, "vocab_size": 1}, str(path))
    form = "zoo" if "architecture" in data else "transformers" if "model_type" in data else "upstream"
    sha, size = sha256_file(path)
    record = {"source": "file", "path": str(path), "format": form, "sha256": sha, "vocab_size": given}
    return config, _Source(record, [{"path": path.name, "role": "config", "size": size, "sha256": sha}])


def _sized(config: ModelConfig, given: object, tokens: int, emit: ProgressCallback, label: str) -> ModelConfig:
    """``config`` with ``vocab_size`` set from the vocab, saying so when the config gave another (``given``)."""
    if given is not None and given != tokens:
        message = f"vocab_size {tokens} (the vocab's size; the config says {given})"
        log.info("%s: %s", label, message)
        emit(ProgressEvent("note", label, message=message))
    return dataclasses.replace(config, vocab_size=tokens)


# ------------------------------------------------------------------------------------------------- vocab
def _vocab(vocab: str | os.PathLike[str] | None, vocab_from: Model | None,
           train_vocab: Sequence[str | os.PathLike[str]], vocab_size: int | None, *, source: int | None,
           offline: bool | None, manifests: Sequence[str | os.PathLike[str]], emit: ProgressCallback) -> _Vocab:
    """The vocab named by exactly one of the three options (checked by :func:`_check_options`)."""
    if vocab is not None:
        path = Path(vocab).expanduser()
        tokens = read_vocab(path).tokens
        sha, size = sha256_file(path)
        found = _Vocab(tokens, not looks_cased(tokens), None,
                       _Source({"source": "file", "path": str(path)},
                               [{"path": path.name, "role": "vocab", "size": size, "sha256": sha}]), str(path))
    elif vocab_from is not None:
        prepared = prepare(vocab_from, source=source, offline=offline, manifests=manifests, progress=emit)
        path = prepared.path / VOCAB
        if not path.is_file():
            raise missing_file(prepared.path, VOCAB)
        lowercase, strip_accents = prepared.tokenizer_options()
        name = prepared.manifest.name if prepared.manifest is not None else str(vocab_from)
        found = _Vocab(read_vocab(path).tokens, lowercase, strip_accents,
                       _Source({"source": "model", "model": name}, []), str(path))
    else:
        assert vocab_size is not None
        texts = [Path(f).expanduser() for f in train_vocab]
        tokens = train_wordpiece(texts, vocab_size, progress=emit)
        inputs = [{"path": str(p), "role": "vocab-training-text", **_hashed(p)} for p in texts]
        found = _Vocab(tokens, True, None, _Source({"source": "trained", "vocab_size": vocab_size,
                                                    "special_tokens": list(SPECIAL_TOKENS),
                                                    "lowercase": True}, inputs), "the trained vocab")
    # the special tokens are there (a CheckpointError naming the missing ones otherwise)
    Tokenizer(found.tokens, lowercase=found.lowercase, strip_accents=found.strip_accents, source=found.origin)
    return found


def _hashed(path: Path) -> dict[str, Any]:
    sha, size = sha256_file(path)
    return {"size": size, "sha256": sha}


# ----------------------------------------------------------------------------------------------- weights
def initial_weights(config: ModelConfig, *, heads: str | None = "pretraining",
                    seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """Canonical name → float32 tensor of a new model with ``heads``, drawn as upstream draws them
    (:meth:`~zoo.models.encoder.Encoder.init_weights`) from a CPU generator seeded with ``seed``."""
    import torch

    from zoo.models.encoder import Encoder

    with torch.device("meta"):  # no throw-away initialisation by torch's own defaults
        model = Encoder(config, heads=heads)
    model.to_empty(device="cpu")
    model.init_weights(torch.Generator().manual_seed(seed))
    return {name: t.contiguous() for name, t in model.state_dict().items()}


def _write(out: Path, config: ModelConfig, state: dict[str, torch.Tensor], words: _Vocab, config_source: _Source,
           seed: int) -> None:
    import torch

    with staged_output(out, kind="init") as staged:
        with staged.open(WEIGHTS, "weights") as fh:
            write_state(fh, state, {"format": "pt", "zoo.init_seed": str(seed)})
        staged.write_json(CONFIG, config.to_dict(), "config")
        staged.write_text(VOCAB, "".join(t + "\n" for t in words.tokens), "vocab")
        staged.receipt.update({
            "architecture": config.architecture,
            "config": config_source.record,
            "vocab": {**words.source.record, "tokens": len(words.tokens), "sha256": staged.outputs[VOCAB]["sha256"]},
            "inputs": config_source.inputs + words.source.inputs,
            "init": {"scheme": INIT_SCHEME, "initializer_range": config.initializer_range, "seed": seed,
                     "generator": f"torch {torch.__version__} CPU generator"},
            "parameters": sum(t.numel() for t in state.values()),
            "tensors": len(state),
            "heads": sorted(present_heads(state)),
            "tokenizer": {"lowercase": words.lowercase, "strip_accents": words.strip_accents},
        })


__all__ = ["DEFAULT_SEED", "INIT_SCHEME", "init_model", "initial_weights", "read_model_config"]
