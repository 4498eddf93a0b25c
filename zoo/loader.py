"""``zoo.load``: a registry name, a converted directory or an upstream TF release → a ready model + tokenizer.

::

    loaded = zoo.load("albert_base_zh")
    loaded.fill_mask("今天天气很[MASK]。")        # ranked tokens and scores for each [MASK]
    loaded.embed(["你好", "今天天气很好"])          # [2, H] sentence vectors
    out = loaded(["你好"])                         # ModelOutput on the model's device

Weights are read from ``model.safetensors`` straight into a model built on the ``meta`` device: tensors are
assigned (``load_state_dict(assign=True)``), so no parameter is randomly initialised and then overwritten,
and no second copy of the weights is made. The MLM head is loaded only when asked for — by ``heads=`` or, lazily
from the same file, by the first :meth:`Loaded.fill_mask` — so embedding costs nothing extra.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo.config import (
    CHECKPOINT_HEADS,
    PRETRAINING_HEADS,
    TASK_HEAD_NAMES,
    InvalidConfig,
    ModelConfig,
    normalize_dtype,
)
from zoo.converters.modeldir import VOCAB, WEIGHTS, missing_file, read_config, read_directory_vocab
from zoo.errors import CheckpointError, UsageError, ZooError
from zoo.progress import Progress, ProgressCallback, ProgressEvent, reporting
from zoo.tokenizer import Tokenizer
from zoo.weights import Model, Prepared, use

if TYPE_CHECKING:
    import torch

    from zoo.models.encoder import Encoder, ModelOutput
    from zoo.registry import Manifest

log = logging.getLogger("zoo.loader")

POSITION_INITS = ("copy", "random")

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
    layout: str = "zoo"
    #: fill-mask passed :func:`check_fill_mask` once (its warning about an ``unknown`` MLM head is given once)
    _fill_mask_checked: bool = dataclasses.field(default=False, init=False, repr=False, compare=False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def encode(self, texts: TextOrPair | Sequence[TextOrPair]) -> dict[str, torch.Tensor]:
        """Tokenize texts or ``(text, pair)`` tuples into padded, truncated tensors on the model's device."""
        batch = self.tokenizer_batch(texts, truncation=True)
        return {k: v.to(self.device) for k, v in batch.items()}

    def tokenizer_batch(self, texts: TextOrPair | Sequence[TextOrPair], *, truncation: bool) -> dict[str, Any]:
        if isinstance(texts, (str, tuple)):
            texts = [texts]
        texts = list(texts)
        if not texts:
            raise UsageError("no texts given")
        pairs = [t for t in texts if isinstance(t, tuple)]
        if pairs and len(pairs) != len(texts):
            raise UsageError("mix of single texts and (text, pair) tuples", hint="pass one kind per call")
        if pairs:
            return self.tokenizer([a for a, _ in pairs], [b for _, b in pairs], padding=True,
                                  truncation=truncation, return_tensors="pt")
        singles = [t for t in texts if isinstance(t, str)]
        return self.tokenizer(singles, padding=True, truncation=truncation, return_tensors="pt")

    def __call__(self, texts: TextOrPair | Sequence[TextOrPair], **forward: Any) -> ModelOutput:
        """Run the model on texts (or ``(text, pair)`` tuples); outputs stay on the model's device."""
        import torch

        with torch.inference_mode():
            out: ModelOutput = self.model(**self.encode(texts), **forward)
        return out

    def embed(self, texts: str | Sequence[str], pooling: str = "cls", batch_size: int = 32) -> torch.Tensor:
        """One float32 vector per text: the last layer's [CLS] state (``"cls"``) or the mean over real
        tokens (``"mean"``). Shape ``[len(texts), hidden_size]``, on the model's device. Texts longer than the
        model's positions are truncated, with a warning."""
        import torch

        if pooling not in ("cls", "mean"):
            raise UsageError(f"pooling={pooling!r} is not supported", hint='use "cls" or "mean"')
        texts = [texts] if isinstance(texts, str) else list(texts)
        _check_batch(batch_size)
        if not texts:
            return torch.empty(0, self.config.hidden_size, device=self.device)
        vectors = []
        limit = self.tokenizer.model_max_length
        with torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                chunk = texts[start:start + batch_size]
                full = self.tokenizer(chunk)["input_ids"]
                for text, ids in zip(chunk, full):
                    if len(ids) > limit:
                        log.warning("truncated a text of %d tokens to the model's %d positions: %s",
                                    len(ids), limit, text[:30] + ("…" if len(text) > 30 else ""))
                batch = self.encode(chunk)
                hidden = self.model(**batch).last_hidden_state.float()
                if pooling == "cls":
                    vectors.append(hidden[:, 0])
                else:
                    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    vectors.append((hidden * mask).sum(1) / mask.sum(1))
        return torch.cat(vectors)

    def fill_mask(self, text: str, top_k: int = 5) -> list[list[dict[str, Any]]]:
        """For each ``[MASK]`` in ``text``, in order, the ``top_k`` most likely tokens as
        ``{"token", "id", "score"}`` (score = softmax probability). Loads the MLM head on first use."""
        import torch

        if not self._fill_mask_checked:
            check_fill_mask(self.manifest)
            self._fill_mask_checked = True
        if top_k < 1:
            raise UsageError(f"top_k must be at least 1, got {top_k}")
        self._ensure_mlm_head()
        full = self.tokenizer(text)["input_ids"]
        wanted = sum(1 for i in full if i == self.tokenizer.mask_token_id)
        batch = self.encode(text)
        positions = (batch["input_ids"][0] == self.tokenizer.mask_token_id).nonzero().flatten()
        if wanted == 0:
            raise UsageError(f"no [MASK] token in {text[:60]!r}",
                             hint="write [MASK] where a token should be predicted")
        if len(positions) < wanted:
            raise UsageError(f"{wanted - len(positions)} of the {wanted} [MASK] tokens lie beyond the model's "
                             f"{self.tokenizer.model_max_length} positions: the text has {len(full)} tokens",
                             hint="shorten the text so that every [MASK] is within the limit")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state[0, positions]
            logits = self.model.mlm_logits(hidden).float()[:, : self.tokenizer.vocab_size]
        probs = logits.softmax(-1)  # over every row, as transformers' fill-mask computes it
        ranking = probs.clone()
        unreachable = [i for i in self.tokenizer.unreachable_ids if i < ranking.shape[-1]]
        if unreachable:  # rows of empty or repeated vocab lines: no text has them, so they are never an answer
            ranking[:, unreachable] = -1.0
        ids = ranking.topk(min(top_k, ranking.shape[-1] - len(unreachable)), dim=-1).indices
        scores = probs.gather(-1, ids)
        return [[{"token": self.tokenizer.convert_ids_to_tokens(int(i)), "id": int(i), "score": float(s)}
                 for s, i in zip(row_scores, row_ids)] for row_scores, row_ids in zip(scores, ids)]

    def tag(self, texts: str | Sequence[str], *, batch_size: int = 32, max_seq_length: int | None = None,
            stride: int | None = None) -> list[list[dict[str, Any]]]:
        """The entities a token-classification model finds in each text: ``{"text", "label", "start", "end",
        "score"}`` with character offsets into the text (``text[start:end]``) and the mean probability of the
        entity's tags. Every character is predicted — spaces and digit runs included — and long texts are split
        into overlapping windows (by default the ones the model was fine-tuned with), never truncated."""
        import torch

        from zoo import tagging

        tagset = self._tagset()
        texts = [texts] if isinstance(texts, str) else list(texts)
        _check_batch(batch_size)
        if not all(isinstance(t, str) for t in texts):
            raise UsageError("tag() takes texts (strings)", hint="pass a string or a list of strings")
        length, stride = self._windows(max_seq_length, stride)
        alignments = tagging.align_batch(self.tokenizer, texts)
        windows = [tagging.encode_tagged(self.tokenizer, a, max_seq_length=length, stride=stride) for a in alignments]
        with torch.inference_mode():
            outputs = tagging.batched(windows, batch_size, self._window_logits)
        found = []
        for text, alignment, ws, out in zip(texts, alignments, windows, outputs):
            spans = tagging.predict_spans(alignment, ws, out, tagset)
            found.append([{"text": text[s.start:s.end], "label": s.label, "start": s.start, "end": s.end,
                           "score": s.score} for s in spans])
        return found

    def classify(self, texts: TextOrPair | Sequence[TextOrPair], *, batch_size: int = 32,
                 all_scores: bool = False) -> list[dict[str, Any]]:
        """The label a sequence-classification model gives each text (or ``(text, pair)`` tuple):
        ``{"label", "score"}`` (softmax probability), plus ``"scores"`` for every label with ``all_scores``. A
        text longer than the model's positions is truncated, with a warning."""
        import torch

        labels = self._task_labels("sequence-classification", "classify")
        items = [texts] if isinstance(texts, (str, tuple)) else list(texts)
        _check_batch(batch_size)
        for item in items:
            if not (isinstance(item, str) or (isinstance(item, tuple) and len(item) == 2
                                              and all(isinstance(t, str) for t in item))):
                raise UsageError(f"classify() takes texts or (text, pair) tuples of two strings, got {item!r:.60}",
                                 hint='e.g. classify(["好吃"]) or classify([("今天天气怎么样", "今天天气如何")])')
        results = []
        with torch.inference_mode():
            for start in range(0, len(items), batch_size):
                chunk = items[start:start + batch_size]
                batch = self._text_batch(chunk)
                probs = self.model(**batch).logits.float().softmax(-1).cpu()
                for row in probs:
                    best = int(row.argmax())
                    result: dict[str, Any] = {"label": labels[best], "score": float(row[best])}
                    if all_scores:
                        result["scores"] = {label: float(p) for label, p in zip(labels, row)}
                    results.append(result)
        return results

    def _task_labels(self, task: str, method: str) -> tuple[str, ...]:
        if self.config.task != task or not self.config.labels or not hasattr(self.model, "classifier"):
            what = f"a {self.config.task} model" if self.config.task else "no fine-tuned task head"
            raise UsageError(f"{method}() needs a {task} model; {self.path} has {what}",
                             hint=f"fine-tune one: zoo finetune MODEL --task {task} --train FILE --out DIR")
        return self.config.labels

    def _tagset(self) -> Any:
        from zoo import tagging

        labels = self._task_labels("token-classification", "tag")
        try:
            return tagging.TagSet.from_tags(labels)
        except ValueError as exc:
            raise CheckpointError(f"{self.path / 'config.json'}: its labels are no tag set ({exc})") from None

    def _windows(self, max_seq_length: int | None, stride: int | None) -> tuple[int, int]:
        """The window length and overlap: given, else the fine-tuning run's (its receipt), else the model's
        positions (at most 512) and a quarter of them."""
        from zoo.converters.modeldir import read_receipt

        settings: dict[str, Any] = {}
        with contextlib.suppress(ZooError):
            settings = dict((read_receipt(self.path) or {}).get("settings") or {})
        if max_seq_length is not None:  # a length of the caller's: its stride follows it unless given
            settings = {}
        length = int(max_seq_length or settings.get("max_seq_length") or min(self.config.max_position_embeddings, 512))
        length = min(length, self.config.max_position_embeddings)
        return length, int(stride if stride is not None else settings.get("stride") or length // 4)

    def _window_logits(self, windows: Sequence[Any]) -> list[Any]:
        import numpy as np
        import torch

        width = max(len(w.input_ids) for w in windows)
        ids = np.full((len(windows), width), self.tokenizer.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(windows), width), dtype=np.int64)
        for row, w in enumerate(windows):
            ids[row, :len(w.input_ids)], mask[row, :len(w.input_ids)] = w.input_ids, 1
        batch = {"input_ids": torch.from_numpy(ids).to(self.device),
                 "attention_mask": torch.from_numpy(mask).to(self.device)}
        logits = self.model(**batch).logits.float().cpu().numpy()
        return list(logits)

    def _text_batch(self, items: Sequence[TextOrPair]) -> dict[str, torch.Tensor]:
        """Texts (or pairs) as fine-tuning saw them: special-token strings in them are text; truncated to the
        model's positions, with a warning when that cut any."""
        pairs = [t for t in items if isinstance(t, tuple)]
        if pairs and len(pairs) != len(items):
            raise UsageError("mix of single texts and (text, pair) tuples", hint="pass one kind per call")
        first = [t[0] if isinstance(t, tuple) else t for t in items]
        second = [t[1] for t in pairs] if pairs else None
        full = self.tokenizer(first, second, split_special_tokens=True)["input_ids"]
        limit = self.tokenizer.model_max_length
        long = sum(len(ids) > limit for ids in full)
        if long:
            log.warning("%d text(s) longer than the model's %d positions were truncated", long, limit)
        batch = self.tokenizer(first, second, padding=True, truncation=True, return_tensors="pt",
                               split_special_tokens=True)
        return {k: v.to(self.device) for k, v in batch.items()}

    def _ensure_mlm_head(self) -> None:
        """Attach the checkpoint's MLM head to a model loaded without it (read from the same weights file)."""
        if hasattr(self.model, "mlm"):
            return
        import torch

        from zoo.models.heads import MaskedLMHead

        weights = self.path / WEIGHTS
        with _open_weights(weights, self.config, self.device, self.layout) as f:
            names = [n for n in f.keys() if n.startswith("mlm.")]  # noqa: SIM118 - a _Weights, not a dict
            if not names:
                raise UsageError(f"{self.path} has no MLM head: fill-mask needs one",
                                 hint="use a checkpoint released with its pretraining heads (`zoo info` shows "
                                      "them); for sentence vectors use embed")
            state = {n.removeprefix("mlm."): f.get(n) for n in names}
        with torch.device("meta"):
            head = MaskedLMHead(self.config)
        dtype = next(self.model.parameters()).dtype
        head.load_state_dict({k: v.to(dtype) for k, v in state.items()}, assign=True)
        self.model.mlm = head.eval().requires_grad_(False)


def _check_batch(batch_size: int) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UsageError(f"batch_size must be a whole number of at least 1, got {batch_size!r}")


def check_fill_mask(manifest: Manifest | None, *, warn: bool = True) -> None:
    """Refuse fill-mask for a registry model whose manifest records its MLM head as ``untrained`` or ``absent``
    (the ``heads:`` key, docs/manifests.md): its predictions would be noise. Needs only the manifest, so ``zoo run``
    refuses before downloading anything. Logs a warning (``warn``) when the record is ``unknown``; a model loaded
    from a path (``None``) passes."""
    if manifest is None:
        return
    heads, name = manifest.heads, manifest.name
    state = heads.state("mlm")
    why = f" ({heads.note})" if heads.note else ""
    if heads.unusable("mlm"):
        raise UsageError(f"{name}: the MLM head of this release is {state}, so fill-mask would rank tokens at "
                         f"random{why}",
                         hint=f"the encoder is fine for embed() and fine-tuning; to predict masked tokens, train the "
                              f"MLM head first (zoo pretrain {name} --corpus FILE --objective mlm --steps N "
                              "--out DIR) and run the result (zoo run ./DIR ...)")
    if state == "unknown" and warn:
        log.warning("%s: whether the MLM head of this release was trained is not established%s; check the "
                    "predictions before relying on them", name, why)


# ------------------------------------------------------------------------------------------------ load
def load(model: Model, *, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None,
         heads: str | None = None, num_labels: int = 2, max_position_embeddings: int | None = None,
         position_init: str = "copy", source: int | None = None, offline: bool | None = None,
         manifests: Sequence[str | os.PathLike[str]] = (), progress: Progress = None) -> Loaded:
    """Load a model and its tokenizer.

    ``model``: a registry name or alias (or a :class:`~zoo.registry.Manifest`); or a path — a
    :class:`pathlib.Path` or a string with a ``/`` (``"./albert_base_zh"``) — to a directory written by
    ``zoo convert``, ``zoo export`` or ``zoo pretrain``, or to an upstream TF release (converted into the cache
    on first use). A bare name is always a registry name, even where a folder of that name exists.
    ``source``/``offline`` choose the download source and forbid network access; ``manifests`` adds user
    manifest directories; ``progress`` shows downloads and conversions (``None``: when a person is watching).

    ``device``: ``"auto"`` (cuda if available, else cpu) or any torch device. ``dtype``: ``None`` (float32),
    ``"float32"``, ``"float16"``, ``"bfloat16"`` (or ``fp32``, ``fp16``, ``bf16``) or a ``torch.dtype``.
    ``heads``: ``None`` (the encoder; a fine-tuned model's own task head, ready for :meth:`Loaded.tag` or
    :meth:`Loaded.classify`), ``"mlm"``, ``"pretraining"`` (MLM + SOP/NSP, from the checkpoint), or a task head —
    from a fine-tuned checkpoint, else freshly initialised: ``"sequence-classification"`` (``num_labels``),
    ``"token-classification"`` (``num_labels``), ``"question-answering"``. ``max_position_embeddings`` larger than
    the checkpoint's keeps the learned positions and fills the rest (``position_init="copy"`` repeats the learned
    table, ``"random"`` draws from normal(0, initializer_range)); the new positions need training (``zoo
    pretrain``).
    """
    dev = pick_device(device)
    with reporting(progress) as emit:
        def load_prepared(prepared: Prepared) -> Loaded:
            return _load_prepared(prepared, dev, dtype, heads, num_labels, max_position_embeddings, position_init,
                                  emit)

        return use(model, load_prepared, source=source, offline=offline, manifests=manifests, progress=emit)


def _load_prepared(prepared: Prepared, device: torch.device, dtype: str | torch.dtype | None, heads: str | None,
                   num_labels: int, max_position_embeddings: int | None, position_init: str,
                   emit: ProgressCallback) -> Loaded:
    directory, manifest = prepared.path, prepared.manifest
    emit(ProgressEvent("note", prepared.name, message=f"loading on {device}"))
    config, layout = read_config(directory)
    tokenizer = build_tokenizer(prepared, config, max_length=max_position_embeddings)
    if heads is None and config.task is not None:  # a fine-tuned model: its task head is what it is for
        heads = config.task
    if manifest is not None and heads in PRETRAINING_HEADS:
        _warn_untrained_heads(manifest, heads)
    model = load_model(directory / WEIGHTS, config, device=device, dtype=dtype, heads=heads,
                       num_labels=num_labels, max_position_embeddings=max_position_embeddings,
                       position_init=position_init, layout=layout)
    return Loaded(model=model, tokenizer=tokenizer, config=model.config, manifest=manifest, path=directory,
                  layout=layout)


def build_tokenizer(prepared: Prepared, config: ModelConfig, *, receipt: Mapping[str, object] | None = None,
                    max_length: int | None = None) -> Tokenizer:
    """The tokenizer of a prepared directory: its ``vocab.txt``, one line per embedding row
    (:func:`~zoo.converters.modeldir.read_directory_vocab`), cased as its manifest or the directory says
    (:meth:`Prepared.tokenizer_options`; ``receipt``: the directory's, when already read), for inputs of at most
    ``max_length`` tokens (default: the config's positions)."""
    lowercase, strip_accents = prepared.tokenizer_options(receipt)
    return Tokenizer(read_directory_vocab(prepared.path, config), lowercase=lowercase, strip_accents=strip_accents,
                     model_max_length=max_length or config.max_position_embeddings,
                     source=str(prepared.path / VOCAB))


def _warn_untrained_heads(manifest: Manifest, heads: str) -> None:
    """Loading a head the manifest records as untrained is fine for training it (``zoo pretrain``), not for its
    predictions: say so once. (An ``absent`` head fails in :func:`load_model` unless it is initialised fresh.)"""
    wanted = ("mlm", "seq_relationship") if heads == "pretraining" else ("mlm",)
    untrained = [h for h in wanted if manifest.heads.state(h) == "untrained"]
    if untrained:
        note = f" ({manifest.heads.note})" if manifest.heads.note else ""
        log.warning("%s: the %s head(s) of this release are untrained%s: train them before using their outputs",
                    manifest.name, " and ".join(untrained), note)


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """A torch device that exists here: ``"auto"`` is cuda when available, else cpu. Asking for a GPU this
    machine does not have is a :class:`~zoo.errors.UsageError` saying what is available."""
    import torch

    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise UsageError(f"unknown device {device!r}: {exc}", hint='use "auto", "cpu", "cuda" or "cuda:N"') from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise UsageError(f"device {str(device)!r} is not available: this machine has no usable CUDA GPU "
                             f"(torch {torch.__version__}, {build})", hint='use device "cpu" (or "auto")')
        if dev.index is not None and dev.index >= count:
            raise UsageError(f"device {str(device)!r} is not available: this machine has {count} GPU(s), "
                             f"cuda:0..cuda:{count - 1}", hint=f'use "cuda:0" … "cuda:{count - 1}"')
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise UsageError(f"device {str(device)!r} is not available on this machine", hint='use device "cpu"')
    return dev


def torch_dtype(dtype: str | torch.dtype | None) -> torch.dtype:
    """The torch dtype for a dtype name (:func:`zoo.config.normalize_dtype`), a torch dtype, or None (float32)."""
    import torch

    if dtype is None:
        return torch.float32
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise UsageError(f"dtype {dtype} is not a floating-point type")
        return dtype
    return getattr(torch, normalize_dtype(dtype))  # type: ignore[no-any-return]


def load_model(weights: Path, config: ModelConfig, *, device: str | torch.device = "auto",
               dtype: str | torch.dtype | None = None, heads: str | None = None, num_labels: int = 2,
               max_position_embeddings: int | None = None, position_init: str = "copy",
               layout: str = "zoo", init_missing_heads: bool = False, fresh_task_head: bool = False) -> Encoder:
    """Build :class:`~zoo.models.encoder.Encoder` on ``meta`` and assign the safetensors tensors to it.

    ``layout`` is ``"zoo"`` (canonical names, read tensor by tensor) or ``"transformers"`` (renamed through
    :mod:`zoo.converters.hf_names`). Missing or unexpected weights and shape mismatches raise
    :class:`~zoo.errors.CheckpointError`; ``fresh_task_head`` initialises a task head fresh even where the
    checkpoint has one (fine-tuning for other labels); with ``init_missing_heads`` a pretraining head the
    checkpoint lacks is initialised fresh instead (for training), with a warning.
    """
    import torch

    from zoo.models.encoder import Encoder

    dev, dt = pick_device(device), torch_dtype(dtype)
    config, learned_positions = _with_positions(config, max_position_embeddings, position_init)
    if not weights.is_file():
        raise missing_file(weights.parent, weights.name)

    with torch.device("meta"):
        model = Encoder(config, heads=heads, num_labels=num_labels)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    with _open_weights(weights, config, dev, layout) as f:
        fresh = _fresh_parameters(weights, expected, f.keys(), heads, init_missing_heads, fresh_task_head,
                                  config.task)
        state = _read_tensors(weights, f, expected, fresh, dt, learned_positions)

    if config.max_position_embeddings != learned_positions:
        state["embeddings.position.weight"] = _extend_positions(
            state["embeddings.position.weight"], config.max_position_embeddings, position_init,
            config.initializer_range)
    model.load_state_dict(state, strict=False, assign=True)
    _init_fresh(model, fresh, dev)
    model.to(dt)
    leftover = [name for name, t in model.state_dict().items() if t.is_meta]
    if leftover:  # a bug, not a user error: every tensor is either loaded or initialised fresh
        raise RuntimeError(f"parameters left on the meta device: {leftover}")
    return model.eval().requires_grad_(False)


def _with_positions(config: ModelConfig, max_position_embeddings: int | None,
                    position_init: str) -> tuple[ModelConfig, int]:
    """``(config with the positions asked for, the positions the checkpoint learned)``: more positions than learned
    extend the table (:func:`_extend_positions`), fewer are refused."""
    if position_init not in POSITION_INITS:
        raise UsageError(f"position_init={position_init!r} is not supported", hint="use 'copy' or 'random'")
    learned = config.max_position_embeddings
    if max_position_embeddings is None or max_position_embeddings == learned:
        return config, learned
    if max_position_embeddings < learned:
        raise UsageError(f"max_position_embeddings={max_position_embeddings} is smaller than the "
                         f"checkpoint's {learned}", hint="truncate inputs instead")
    try:
        return dataclasses.replace(config, max_position_embeddings=max_position_embeddings), learned
    except InvalidConfig as exc:
        raise UsageError(f"max_position_embeddings={max_position_embeddings!r}: {exc.problems[0][1]}") from None


def _fresh_parameters(weights: Path, expected: dict[str, tuple[int, ...]], available: set[str], heads: str | None,
                      init_missing_heads: bool, fresh_task_head: bool, task: str | None) -> set[str]:
    """The parameters the model expects that the checkpoint does not provide and that are initialised fresh: a task
    head (fine-tuning starts there; with ``fresh_task_head`` also where the checkpoint has one), a pooler saved
    without one, and — with ``init_missing_heads`` — pretraining heads a release lacks. Any other missing or
    unexpected weight is a :class:`CheckpointError`."""
    fresh = {name for name in expected if name.split(".")[0] in TASK_HEAD_NAMES
             and (fresh_task_head or name not in available)}
    pooler = {name for name in expected if name.startswith("pooler.")}
    if pooler and not pooler & available:
        # transformers' *ForMaskedLM and *ForTokenClassification checkpoints have no pooler (e.g. UER's RoBERTa
        # releases): like transformers' BertModel, initialise it fresh, and say that pooler_output is then
        # untrained (a tagger, whose head reads every token, never uses it)
        (log.info if task == "token-classification" else log.warning)(
            "%s has no pooler (it was saved without one): pooler_output is randomly initialised and means nothing "
            "until trained; embed() does not use it", weights)
        fresh |= pooler
    unused_heads = {k for k in available - set(expected) if k.split(".")[0] in (*CHECKPOINT_HEADS, *TASK_HEAD_NAMES)}
    missing = sorted(set(expected) - fresh - available)
    unexpected = sorted(available - set(expected) - unused_heads)
    missing_heads = {m.split(".")[0] for m in missing if m.split(".")[0] in CHECKPOINT_HEADS}
    if missing and heads in PRETRAINING_HEADS and not unexpected \
            and all(m.split(".")[0] in CHECKPOINT_HEADS for m in missing):
        if not init_missing_heads:
            raise CheckpointError(f"{weights} has no {' or '.join(sorted(missing_heads))} head "
                                  f"(missing {', '.join(missing[:3])} …)",
                                  hint="this checkpoint was released without its pretraining heads; only the "
                                       "encoder (embeddings, pooled vectors) can be used")
        log.warning("%s has no %s head: initialising it fresh", weights, " or ".join(sorted(missing_heads)))
        return fresh | set(missing)
    if missing or unexpected:
        raise CheckpointError(_mismatch(weights, missing, unexpected),
                              hint="the weights do not match config.json; convert the checkpoint again")
    return fresh


def _read_tensors(weights: Path, f: _Weights, expected: dict[str, tuple[int, ...]], fresh: set[str],
                  dtype: torch.dtype, learned_positions: int) -> dict[str, torch.Tensor]:
    """Every expected tensor the checkpoint provides, its shape checked (the position table may be the learned
    one, about to be extended), floats cast to ``dtype``."""
    state: dict[str, torch.Tensor] = {}
    for name, shape in expected.items():
        if name in fresh:
            continue
        got = f.shape(name)
        extending = name == "embeddings.position.weight" and got == (learned_positions, *shape[1:])
        if got != shape and not extending:
            raise CheckpointError(f"{weights}: {name} has shape {list(got)}, config.json implies {list(shape)}",
                                  hint="config.json and the weights disagree; convert the checkpoint again")
        tensor = f.get(name)
        state[name] = tensor.to(dtype) if tensor.is_floating_point() else tensor
    return state


def _init_fresh(model: Encoder, fresh: set[str], device: torch.device) -> None:
    """Materialise and initialise the parameters no checkpoint provides, like the TF code: truncated normal(0,
    initializer_range) weights, zero biases, LayerNorm 1/0 (:meth:`Encoder.init_weights`' rule)."""
    import torch

    modules = {name.rsplit(".", 1)[0] for name in fresh}
    for name in sorted(modules):
        model.get_submodule(name).to_empty(device=device, recurse=False)
    with torch.no_grad():
        model.init_weights(only=fresh)


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
        return self._handle.get_tensor(name)  # type: ignore[no-any-return]


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
                              hint="the file is damaged or truncated; convert it again") from None


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
                "train them (zoo pretrain --max-position-embeddings) before relying on them", learned, size, init,
                learned, size - 1)
    if init == "copy":
        rows = torch.arange(size, device=table.device) % learned
        return table[rows].clone()
    extra = torch.empty(size - learned, table.shape[1], dtype=table.dtype, device=table.device).normal_(0, std)
    return torch.cat([table, extra])


__all__ = ["POSITION_INITS", "Loaded", "build_tokenizer", "check_fill_mask", "load", "load_model", "pick_device",
           "torch_dtype"]
