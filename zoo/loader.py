"""``zoo.load``: a registry name, a converted directory or an upstream TF release → a ready model.

::

    loaded = zoo.load("albert_base_zh", heads="mlm")
    loaded.fill_mask("今天天气很[MASK]。")        # ranked tokens and scores for each [MASK]
    loaded.embed(["你好", "今天天气很好"])          # [2, H] sentence vectors
    out = loaded(["你好"])                         # ModelOutput on the model's device

Weights are read from ``model.safetensors`` straight into a model built on the ``meta`` device: tensors are
assigned (``load_state_dict(assign=True)``), so no parameter is randomly initialised and then overwritten,
and no second copy of the weights is made.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import ModelConfig
from zoo.converters.ondemand import CONFIG, VOCAB, WEIGHTS
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.tokenizer import Tokenizer

if TYPE_CHECKING:
    import torch

    from zoo.models.encoder import Encoder, ModelOutput
    from zoo.registry import Manifest

log = logging.getLogger("zoo.loader")

POSITION_INITS = ("copy", "random")
_PRETRAINING_PREFIXES = ("mlm.", "seq_relationship.")

TextOrPair = str | tuple[str, str]


# ----------------------------------------------------------------------------------------------- Loaded
@dataclasses.dataclass
class Loaded:
    """A model with its tokenizer. ``manifest`` is ``None`` when loaded from a path."""

    model: Encoder
    tokenizer: Tokenizer
    config: ModelConfig
    manifest: Manifest | None
    path: Path

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: TextOrPair | Sequence[TextOrPair]) -> dict[str, torch.Tensor]:
        """Tokenize texts or ``(text, pair)`` tuples into padded, truncated tensors on the model's device."""
        if isinstance(texts, (str, tuple)):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise UsageError("no texts given")
        pairs = [t for t in texts if isinstance(t, tuple)]
        if pairs and len(pairs) != len(texts):
            raise UsageError("mix of single texts and (text, pair) tuples", hint="pass one kind per call")
        if pairs:
            batch = self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True, truncation=True,
                                   return_tensors="pt")
        else:
            batch = self.tokenizer(texts, padding=True, truncation=True, return_tensors="pt")
        return {k: v.to(self.device) for k, v in batch.items()}

    def __call__(self, texts: TextOrPair | Sequence[TextOrPair], **forward: Any) -> ModelOutput:
        """Run the model on texts (or ``(text, pair)`` tuples); outputs stay on the model's device."""
        import torch

        with torch.inference_mode():
            return self.model(**self.encode(texts), **forward)

    def embed(self, texts: str | Sequence[str], pooling: str = "cls", batch_size: int = 32) -> torch.Tensor:
        """One float32 vector per text: the last layer's [CLS] state (``"cls"``) or the mean over real
        tokens (``"mean"``). Shape ``[len(texts), hidden_size]``, on the model's device."""
        import torch

        if pooling not in ("cls", "mean"):
            raise UsageError(f"pooling={pooling!r} is not supported", hint='use "cls" or "mean"')
        texts = [texts] if isinstance(texts, str) else list(texts)
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.encode(texts[start:start + batch_size])
                hidden = self.model(**batch).last_hidden_state.float()
                if pooling == "cls":
                    vectors.append(hidden[:, 0])
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vectors.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(vectors)

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """For each ``[MASK]`` in ``text``, in order, the ``top_k`` most likely tokens as
        ``{"token", "id", "score"}`` (score = softmax probability)."""
        import torch

        if not hasattr(self.model, "mlm"):
            raise UsageError("fill_mask needs the MLM head, which this model was loaded without",
                             hint='load with zoo.load(..., heads="mlm")')
        batch = self.encode(text)
        positions = (batch["input_ids"][0] == self.tokenizer.mask_token_id).nonzero().flatten()
        if len(positions) == 0:
            raise UsageError(f"no [MASK] token in {text!r}", hint="write [MASK] where a token should be predicted")
        with torch.inference_mode():
            logits = self.model(**batch).mlm_logits[0, positions].float()
        probs = logits.softmax(-1)
        scores, ids = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
        return [[{"token": self.tokenizer.convert_ids_to_tokens(int(i)), "id": int(i), "score": float(s)}
                 for s, i in zip(row_scores, row_ids)] for row_scores, row_ids in zip(scores, ids)]


# ------------------------------------------------------------------------------------------------ load
def load(name_or_path: str | Path | Manifest, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         heads: str | None = None, num_labels: int = 2, max_position_embeddings: int | None = None,
         position_init: str = "copy", source: int | None = None, offline: bool | None = None) -> Loaded:
    """Load a model and its tokenizer.

    ``name_or_path``: a registry name/alias (or a :class:`~zoo.registry.Manifest`); a directory written by ``zoo convert`` (``model.safetensors``
    with canonical names + ``config.json`` + ``vocab.txt``) or by ``zoo export`` (transformers layout); or an
    upstream TF release directory, converted into the cache on first use. ``source``/``offline`` choose the
    download source and forbid network access for registry names.

    ``device``: ``"auto"`` (cuda if available, else cpu) or any torch device. ``dtype``: ``None`` (float32),
    ``"float16"``, ``"bfloat16"``, ``"float32"`` or a ``torch.dtype``. ``heads``: ``None``, ``"mlm"``,
    ``"pretraining"`` (MLM + SOP/NSP, from the checkpoint), or a freshly initialised task head:
    ``"sequence-classification"`` (``num_labels``), ``"token-classification"`` (``num_labels``),
    ``"question-answering"``. ``max_position_embeddings`` larger than the checkpoint's keeps the learned
    positions and fills the rest (``position_init="copy"`` repeats the learned table, ``"random"`` draws from
    normal(0, initializer_range)); the new positions need fine-tuning.
    """
    from zoo.converters.ondemand import resolve_weights

    resolved = resolve_weights(name_or_path, source=source, offline=offline)
    directory, manifest = resolved.path, resolved.manifest
    if manifest is not None:
        lowercase, strip_accents = manifest.tokenizer.lowercase, manifest.tokenizer.strip_accents
    else:
        lowercase, strip_accents = tokenizer_options(directory)
    config, layout = read_config(directory)
    model = load_model(directory / WEIGHTS, config, device=device, dtype=dtype, heads=heads,
                       num_labels=num_labels, max_position_embeddings=max_position_embeddings,
                       position_init=position_init, layout=layout)
    vocab = directory / VOCAB
    if not vocab.is_file():
        raise NotFoundError(f"{vocab} does not exist", hint="a converted directory holds vocab.txt next to the weights")
    tokenizer = Tokenizer.from_file(vocab, lowercase=lowercase, strip_accents=strip_accents,
                                    model_max_length=model.config.max_position_embeddings)
    # Fewer tokens than embedding rows is legitimate (ALBERT's vocab loader drops repeated lines);
    # more would produce ids the model has no row for.
    if tokenizer.vocab_size > config.vocab_size:
        raise CheckpointError(f"{vocab} has {tokenizer.vocab_size} tokens but the model's vocab_size is only "
                              f"{config.vocab_size}", hint="the vocab file does not belong to these weights")
    return Loaded(model=model, tokenizer=tokenizer, config=model.config, manifest=manifest, path=directory)


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise UsageError(f"unknown device {device!r}: {exc}", hint='use "auto", "cpu", "cuda" or "cuda:N"') from None


def resolve_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise UsageError(f"dtype {dtype} is not a floating-point type")
        return dtype
    names = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
             "half": torch.float16, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}
    if dtype not in names:
        raise UsageError(f"unknown dtype {dtype!r}", hint="use float32, float16 or bfloat16")
    return names[dtype]


def load_model(weights: Path, config: ModelConfig, *, device: str | torch.device = "auto",
               dtype: str | torch.dtype | None = None, heads: str | None = None, num_labels: int = 2,
               max_position_embeddings: int | None = None, position_init: str = "copy",
               layout: str = "zoo") -> Encoder:
    """Build :class:`~zoo.models.encoder.Encoder` on ``meta`` and assign the safetensors tensors to it.

    ``layout`` is ``"zoo"`` (canonical names, read tensor by tensor) or ``"transformers"`` (renamed through
    :mod:`zoo.converters.hf_names`). Missing or unexpected weights and shape mismatches raise
    :class:`~zoo.errors.CheckpointError`.
    """
    import torch

    from zoo.models.encoder import Encoder
    from zoo.models.heads import PRETRAINING_HEADS

    dev, dt = resolve_device(device), resolve_dtype(dtype)
    if position_init not in POSITION_INITS:
        raise UsageError(f"position_init={position_init!r} is not supported", hint="use 'copy' or 'random'")
    learned_positions = config.max_position_embeddings
    if max_position_embeddings is not None and max_position_embeddings != learned_positions:
        if max_position_embeddings < learned_positions:
            raise UsageError(f"max_position_embeddings={max_position_embeddings} is smaller than the "
                             f"checkpoint's {learned_positions}", hint="truncate inputs instead")
        config = dataclasses.replace(config, max_position_embeddings=max_position_embeddings)
    if not weights.is_file():
        raise NotFoundError(f"{weights} does not exist", hint="convert the checkpoint first (zoo convert)")

    with torch.device("meta"):
        model = Encoder(config, heads=heads, num_labels=num_labels)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    task = {name for name in expected if name.split(".")[0] in ("classifier", "qa_outputs")}

    state: dict[str, torch.Tensor] = {}
    with _open_weights(weights, config, dev, layout) as f:
        available = set(f.keys())
        unused_heads = {k for k in available - set(expected) if k.startswith(_PRETRAINING_PREFIXES)}
        missing = sorted(set(expected) - task - available)
        unexpected = sorted(available - set(expected) - unused_heads)
        if missing and heads in PRETRAINING_HEADS and not unexpected \
                and all(m.startswith(_PRETRAINING_PREFIXES) for m in missing):
            raise CheckpointError(f"{weights} has no pretraining heads (missing {', '.join(missing[:3])} …)",
                                  hint="load with heads=None or a task head")
        if missing or unexpected:
            raise CheckpointError(_mismatch(weights, missing, unexpected),
                                  hint="the weights do not match config.json; re-run zoo convert")
        for name, shape in expected.items():
            if name in task:
                continue
            got = f.shape(name)
            extending = name == "embeddings.position.weight" and got == (learned_positions, *shape[1:])
            if got != shape and not extending:
                raise CheckpointError(f"{weights}: {name} has shape {list(got)}, config.json implies {list(shape)}",
                                      hint="config.json and the weights disagree; re-run zoo convert")
            tensor = f.get(name)
            state[name] = tensor.to(dt) if tensor.is_floating_point() else tensor

    if config.max_position_embeddings != learned_positions:
        state["embeddings.position.weight"] = _extend_positions(
            state["embeddings.position.weight"], config.max_position_embeddings, position_init,
            config.initializer_range)
    model.load_state_dict(state, strict=False, assign=True)
    for module in model.task_head_modules():
        module.to_empty(device=dev)
    model.init_task_heads()
    model.to(dt)
    leftover = [name for name, t in model.state_dict().items() if t.is_meta]
    if leftover:  # a bug, not a user error: every tensor is either loaded or a task head
        raise RuntimeError(f"parameters left on the meta device: {leftover}")
    return model.eval().requires_grad_(False)


class _Weights:
    """Canonical-name view of a weights file: ``keys()``, ``shape(name)``, ``get(name)``."""

    def __init__(self, handle: Any = None, tensors: dict[str, torch.Tensor] | None = None) -> None:
        self._handle, self._tensors = handle, tensors

    def keys(self) -> set[str]:
        return set(self._tensors) if self._tensors is not None else set(self._handle.keys())

    def shape(self, name: str) -> tuple[int, ...]:
        if self._tensors is not None:
            return tuple(self._tensors[name].shape)
        return tuple(self._handle.get_slice(name).get_shape())

    def get(self, name: str) -> torch.Tensor:
        if self._tensors is not None:
            return self._tensors.pop(name)
        return self._handle.get_tensor(name)


@contextlib.contextmanager
def _open_weights(weights: Path, config: ModelConfig, device: torch.device, layout: str) -> Iterator[_Weights]:
    from safetensors import SafetensorError, safe_open

    try:
        if layout == "transformers":
            from safetensors.torch import load_file

            from zoo.converters import hf_names

            yield _Weights(tensors=hf_names.from_transformers(load_file(str(weights), device=str(device)), config))
            return
        with safe_open(str(weights), framework="pt", device=str(device)) as handle:
            yield _Weights(handle=handle)
    except SafetensorError as exc:
        raise CheckpointError(f"{weights} is not a readable safetensors file: {exc}",
                              hint="the file is damaged or truncated; convert again") from None


def _mismatch(weights: Path, missing: list[str], unexpected: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"missing {len(missing)} weight(s): {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} weight(s): "
                     f"{', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    return f"{weights}: " + "; ".join(parts)


def _extend_positions(table: torch.Tensor, size: int, init: str, std: float) -> torch.Tensor:
    import torch

    learned = table.shape[0]
    log.warning("extending position embeddings from %d to %d (%s init): positions %d-%d are not trained; "
                "fine-tune before relying on them", learned, size, init, learned, size - 1)
    if init == "copy":
        rows = torch.arange(size, device=table.device) % learned
        return table[rows].clone()
    extra = torch.empty(size - learned, table.shape[1], dtype=table.dtype, device=table.device).normal_(0, std)
    return torch.cat([table, extra])


# ------------------------------------------------------------------------------- reading a directory
def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; a missing file or anything but an object is a clear error."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NotFoundError(f"{path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path} must hold a JSON object")
    return data


def read_config(directory: Path) -> tuple[ModelConfig, str]:
    """The directory's config and its layout: ``"zoo"`` (zoo convert) or ``"transformers"`` (zoo export)."""
    path = directory / CONFIG
    data = read_json(path)
    if "model_type" in data and "architecture" not in data:
        from zoo.converters import hf_names

        return hf_names.config_from_transformers(data), "transformers"
    try:
        config = ModelConfig.from_dict(data)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path}: unexpected or missing keys ({exc})",
                              hint="config.json must be zoo's ModelConfig (written by zoo convert)") from None
    problems = config.problems()
    if problems:
        raise CheckpointError(f"{path}: {problems[0][0]}: {problems[0][1]}")
    return config, "zoo"


def tokenizer_options(directory: Path) -> tuple[bool, bool | None]:
    """Casing for a directory without a manifest: ``tokenizer_config.json`` (zoo export) or the receipt's
    (zoo convert), else lower-case (Chinese)."""
    for name, keys in (("tokenizer_config.json", ("do_lower_case", "strip_accents")),
                       ("receipt.json", ("lowercase", "strip_accents"))):
        path = directory / name
        if not path.is_file():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue
        if name == "receipt.json":
            data = data.get("tokenizer", {}) if isinstance(data, dict) else {}
        if isinstance(data, dict) and keys[0] in data:
            return bool(data[keys[0]]), data.get(keys[1])
    return True, None


__all__ = ["Loaded", "load", "load_model", "read_config", "resolve_device", "resolve_dtype", "tokenizer_options"]

