"""zoo's canonical parameter names ↔ transformers' ALBERT and BERT names, and configs both ways.

Covers ``AlbertForPreTraining`` / ``AlbertForMaskedLM`` / ``AlbertModel`` and ``BertForPreTraining`` /
``BertForMaskedLM`` / ``BertModel`` state dicts (``head`` = ``"pretraining"`` / ``"mlm"`` / ``None``), and the
fine-tuned ``*ForSequenceClassification`` / ``*ForTokenClassification`` (``head`` = the task): their
``classifier`` is zoo's, and their config's ``id2label`` is zoo's ``labels``.

Two things are not a rename:

* transformers' ALBERT always has ``embedding_hidden_mapping_in``; Google's TF code skips it when E == H.
  Exporting such a model writes an identity mapping; importing accepts only an identity one.
* brightmart's post-LN ALBERT has no transformers class, but it is exactly an ALBERT with E = H:
  ``word_embeddings = word @ word_projᵀ`` (the projection has no bias and precedes the additions; the MLM
  decoder uses the same product), one group with one layer, identity ``mapping_in``. Pre-LN has no
  equivalent in transformers and raises :class:`~zoo.errors.UnsupportedError`.

Tensors are torch tensors; this module imports torch lazily, inside the functions that build tensors.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from zoo._fs import cut
from zoo.config import CLASSIFIER_DROPOUT, TASK_HEADS, InvalidConfig, ModelConfig
from zoo.errors import CheckpointError, UnsupportedError

if TYPE_CHECKING:
    import torch

log = logging.getLogger("zoo.converters")

#: The transformers classes zoo reads and writes, by zoo's ``heads`` value: ``*ForPreTraining``,
#: ``*ForMaskedLM``, the bare ``*Model`` (``None``) and the fine-tuned task classes.
_CLASS_SUFFIXES: dict[str | None, str] = {
    "pretraining": "ForPreTraining", "mlm": "ForMaskedLM", None: "Model",
    "sequence-classification": "ForSequenceClassification", "token-classification": "ForTokenClassification",
}
HF_HEADS: tuple[str | None, ...] = tuple(_CLASS_SUFFIXES)
#: transformers builds these classes' encoders without a pooler (``add_pooling_layer=False``).
_NO_POOLER = ("mlm", "token-classification")

_ALBERT_LAYER = {
    "attention.query": "attention.query",
    "attention.key": "attention.key",
    "attention.value": "attention.value",
    "attention.output": "attention.dense",
    "attention_norm": "attention.LayerNorm",
    "intermediate": "ffn",
    "output": "ffn_output",
    "output_norm": "full_layer_layer_norm",
}
_BERT_LAYER = {
    "attention.query": "attention.self.query",
    "attention.key": "attention.self.key",
    "attention.value": "attention.self.value",
    "attention.output": "attention.output.dense",
    "attention_norm": "attention.output.LayerNorm",
    "intermediate": "intermediate.dense",
    "output": "output.dense",
    "output_norm": "output.LayerNorm",
}


def _hf_architecture(config: ModelConfig) -> str:
    return "bert" if config.architecture == "bert" else "albert"


def hf_class_name(config: ModelConfig, head: str | None = "pretraining") -> str:
    """The transformers class a state dict from :func:`to_transformers` loads into."""
    family = "Bert" if config.architecture == "bert" else "Albert"
    return family + _CLASS_SUFFIXES[head]


def name_map(config: ModelConfig, head: str | None = "pretraining", *,
             prefixed: bool | None = None) -> dict[str, str]:
    """``{canonical name: transformers name}`` for every 1:1 parameter of ``config`` with ``head``.

    ``config`` is the transformers-side architecture (``bert`` or ``albert``); tied decoder weights and the
    identity ``mapping_in`` of an E == H ALBERT are not listed (see :func:`to_transformers`). Encoder names
    carry the ``albert.``/``bert.`` prefix unless ``head`` is ``None`` (override with ``prefixed``).
    """
    if head not in HF_HEADS:
        raise ValueError(f"head must be one of {HF_HEADS}, got {head!r}")
    albert = _hf_architecture(config) == "albert"
    if prefixed is None:
        prefixed = head is not None
    model = ("albert." if albert else "bert.") if prefixed else ""
    names = {
        "embeddings.word.weight": f"{model}embeddings.word_embeddings.weight",
        "embeddings.position.weight": f"{model}embeddings.position_embeddings.weight",
        "embeddings.token_type.weight": f"{model}embeddings.token_type_embeddings.weight",
        "embeddings.norm.weight": f"{model}embeddings.LayerNorm.weight",
        "embeddings.norm.bias": f"{model}embeddings.LayerNorm.bias",
    }
    if albert and config.has_mapping_in:
        for p in ("weight", "bias"):
            names[f"embeddings.mapping_in.{p}"] = f"{model}encoder.embedding_hidden_mapping_in.{p}"
    for k in range(config.num_layer_sets):
        if albert:
            g, i = divmod(k, config.inner_group_num)
            prefix, table = f"{model}encoder.albert_layer_groups.{g}.albert_layers.{i}.", _ALBERT_LAYER
        else:
            prefix, table = f"{model}encoder.layer.{k}.", _BERT_LAYER
        for ours, theirs in table.items():
            for p in ("weight", "bias"):
                names[f"layers.{k}.{ours}.{p}"] = f"{prefix}{theirs}.{p}"
    if head not in _NO_POOLER:
        for p in ("weight", "bias"):
            names[f"pooler.{p}"] = f"{model}pooler.{p}" if albert else f"{model}pooler.dense.{p}"
    if head in TASK_HEADS:  # both task classes name their head ``classifier``, as zoo does
        for p in ("weight", "bias"):
            names[f"classifier.{p}"] = f"classifier.{p}"
    if head in ("pretraining", "mlm"):
        mlm = "predictions." if albert else "cls.predictions."
        transform = "dense" if albert else "transform.dense"
        norm = "LayerNorm" if albert else "transform.LayerNorm"
        for p in ("weight", "bias"):
            names[f"mlm.transform.{p}"] = f"{mlm}{transform}.{p}"
            names[f"mlm.norm.{p}"] = f"{mlm}{norm}.{p}"
        names["mlm.bias"] = f"{mlm}bias"
    if head == "pretraining":
        sop = "sop_classifier.classifier." if albert else "cls.seq_relationship."
        for p in ("weight", "bias"):
            names[f"seq_relationship.{p}"] = f"{sop}{p}"
    return names


def _tied_names(config: ModelConfig, head: str | None) -> tuple[str, str] | None:
    """transformers' decoder weight/bias (tied to the word embeddings and ``mlm.bias``)."""
    if head not in ("pretraining", "mlm"):
        return None
    mlm = "predictions." if _hf_architecture(config) == "albert" else "cls.predictions."
    return f"{mlm}decoder.weight", f"{mlm}decoder.bias"


def hf_equivalent(config: ModelConfig) -> ModelConfig:
    """The config of the transformers model equivalent to ``config`` (brightmart post-LN → ALBERT, E = H)."""
    if config.architecture != "albert-brightmart":
        return config
    if config.ln_type == "preln":
        raise UnsupportedError(
            "brightmart pre-LN ALBERT (ln_type=preln) has no transformers equivalent",
            hint="use zoo.load() for this model; only post-LN brightmart checkpoints export to transformers")
    data = config.to_dict()
    data.update(architecture="albert", embedding_size=config.hidden_size, num_hidden_groups=1,
                inner_group_num=1, ln_type="postln")
    return ModelConfig.from_dict(data)


def to_transformers(state_dict: Mapping[str, torch.Tensor], config: ModelConfig,
                    head: str | None = "pretraining") -> dict[str, torch.Tensor]:
    """Canonical state dict → the state dict of :func:`hf_class_name` ``(hf_equivalent(config), head)``."""
    import torch

    hf_config = hf_equivalent(config)
    sd = dict(state_dict)
    if config.architecture == "albert-brightmart":  # fold the bias-free projection into the table
        proj = sd.pop("embeddings.word_proj.weight")
        word = sd["embeddings.word.weight"]
        sd["embeddings.word.weight"] = (word.double() @ proj.double().T).to(word.dtype)
    names = name_map(hf_config, head)
    missing = sorted(set(names) - set(sd))
    if missing:
        raise CheckpointError(f"cannot export to {hf_class_name(hf_config, head)}: missing {', '.join(missing)}")
    out = {theirs: sd[ours] for ours, theirs in names.items()}
    if hf_config.architecture == "albert" and not hf_config.has_mapping_in:
        h, word = hf_config.hidden_size, sd["embeddings.word.weight"]
        prefix = "albert." if head is not None else ""
        out[f"{prefix}encoder.embedding_hidden_mapping_in.weight"] = torch.eye(h, dtype=word.dtype)
        out[f"{prefix}encoder.embedding_hidden_mapping_in.bias"] = torch.zeros(h, dtype=word.dtype)
    tied = _tied_names(hf_config, head)
    if tied:
        out[tied[0]] = sd["embeddings.word.weight"]
        out[tied[1]] = sd["mlm.bias"]
    return out


def from_transformers(state_dict: Mapping[str, torch.Tensor], config: ModelConfig) -> dict[str, torch.Tensor]:
    """A transformers ALBERT/BERT state dict (any of the three heads) → canonical names.

    The head is recognised from the keys. Tied decoder weights are dropped; an ALBERT with E == H must have an
    identity ``embedding_hidden_mapping_in`` (Google's architecture has none there), else UnsupportedError.
    """
    import torch

    if config.architecture == "albert-brightmart":
        raise UnsupportedError("transformers checkpoints are ALBERT or BERT, not brightmart ALBERT",
                               hint="describe the model as architecture 'albert' with embedding_size = hidden_size")
    keys = set(state_dict)
    prefix = "albert." if config.is_albert else "bert."
    prefixed = any(k.startswith(prefix) for k in keys)
    head = _head_of(keys, config)
    names = name_map(config, head, prefixed=prefixed)
    if head in _NO_POOLER and any(k.startswith(f"{prefix}pooler.") for k in keys):
        names.update({k: v for k, v in name_map(config, None, prefixed=True).items() if k.startswith("pooler.")})
    expected = set(names.values())
    # tied decoder copies, buffers, and task heads of a config that states no task (a manifest's: zoo initialises
    # its own) are not loaded
    ignored = set(_tied_names(config, head) or ()) | {
        k for k in keys if k.endswith("position_ids") or k.startswith(("classifier.", "qa_outputs."))}
    identity: dict[str, str] = {}
    if config.is_albert and not config.has_mapping_in:
        p = prefix if prefixed else ""
        identity = {"weight": f"{p}encoder.embedding_hidden_mapping_in.weight",
                    "bias": f"{p}encoder.embedding_hidden_mapping_in.bias"}
        ignored |= set(identity.values())
    _check_names(config, sorted(expected - keys), sorted(keys - expected - ignored))
    if identity and identity["weight"] in keys:
        w, b = state_dict[identity["weight"]].float(), state_dict[identity["bias"]].float()
        if not (torch.equal(w, torch.eye(w.shape[0])) and not b.any()):
            raise UnsupportedError(
                "this ALBERT has embedding_size == hidden_size and a trained embedding_hidden_mapping_in; "
                "Google's architecture (and zoo's) has no mapping there",
                hint="such a model cannot be represented exactly; load it with transformers instead")
    out = {ours: state_dict[theirs] for ours, theirs in names.items()}
    tied = _tied_names(config, head)
    if tied is not None and not _decoder_is_tied(state_dict, names, tied):
        # zoo's MLM head (like BERT's and ALBERT's TF code) has no decoder of its own: it is the word embeddings.
        # A checkpoint whose decoder differs (trained untied) cannot be represented, so its MLM head is left out
        # rather than silently replaced by a different one; the encoder is unaffected.
        log.warning("the checkpoint's MLM decoder (%s) is not tied to the word embeddings, as zoo's %s MLM head "
                    "is: the MLM head is left out (fill-mask is unavailable; the encoder is unaffected)",
                    tied[0], config.architecture)
        out = {name: t for name, t in out.items() if not name.startswith("mlm.")}
    return out


def _head_of(keys: set[str], config: ModelConfig) -> str | None:
    """The head of a transformers state dict: the task ``config`` states (a fine-tuned model, whose classifier must
    be there), else the pretraining heads its keys hold."""
    if config.task is not None:
        return config.task
    if any(k.startswith(("sop_classifier.", "cls.seq_relationship.")) for k in keys):
        return "pretraining"
    if any(k.startswith(("predictions.", "cls.predictions.")) for k in keys):
        return "mlm"
    return None


def _check_names(config: ModelConfig, missing: list[str], unexpected: list[str]) -> None:
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
        raise CheckpointError(
            f"transformers state dict does not match the {config.architecture} config: " + "; ".join(problems),
            hint="check hidden_size/num_hidden_layers/num_hidden_groups/inner_group_num against config.json")


def _decoder_is_tied(state_dict: Mapping[str, torch.Tensor], names: Mapping[str, str], tied: tuple[str, str]) -> bool:
    """Whether the checkpoint's decoder weight and bias, where it stores them, equal the word embeddings and the
    MLM bias (transformers saves tied tensors under both names; an untied decoder would differ)."""
    import torch

    pairs = ((tied[0], names["embeddings.word.weight"]), (tied[1], names["mlm.bias"]))
    for decoder, shared in pairs:
        if decoder in state_dict:
            a, b = state_dict[decoder], state_dict[shared]
            if a.shape != b.shape or not torch.equal(a, b.to(a.dtype)):
                return False
    return True


def transformers_config(config: ModelConfig, head: str | None = "pretraining") -> dict[str, Any]:
    """The ``config.json`` of the equivalent transformers model (``hidden_act`` keeps transformers' meaning).

    transformers' ALBERT reads one key, ``classifier_dropout_prob``, for the dropout of both its SOP head and its
    classifiers: upstream's SOP head has none, so it is 0 unless ``config`` is a fine-tuned classifier's
    (``classifier_dropout_prob`` set), which keeps the dropout it was trained with. BERT's NSP head has no
    dropout in either, so ``classifier_dropout`` is written only for a classifier. A task ``head`` (the task
    ``config`` states) adds ``id2label``/``label2id``/``num_labels`` from ``config.labels``."""
    if head in TASK_HEADS and (config.task != head or not config.labels):
        raise ValueError(f"a {head} export needs a config with that task and its labels, got task {config.task!r}")
    hf = hf_equivalent(config)
    albert = hf.architecture == "albert"
    data: dict[str, Any] = {
        "architectures": [hf_class_name(hf, head)],
        "model_type": "albert" if albert else "bert",
        "vocab_size": hf.vocab_size,
        "hidden_size": hf.hidden_size,
        "num_hidden_layers": hf.num_hidden_layers,
        "num_attention_heads": hf.num_attention_heads,
        "intermediate_size": hf.intermediate_size,
        "hidden_act": hf.hidden_act,
        "max_position_embeddings": hf.max_position_embeddings,
        "type_vocab_size": hf.type_vocab_size,
        "layer_norm_eps": hf.layer_norm_eps,
        "initializer_range": hf.initializer_range,
        "hidden_dropout_prob": config.hidden_dropout,
        "attention_probs_dropout_prob": config.attention_dropout,
        "position_embedding_type": "absolute",
        "pad_token_id": 0,
        "tokenizer_class": "BertTokenizer",  # Chinese ALBERTs use WordPiece, not SentencePiece
    }
    classifier = config.classifier_dropout_prob
    if head in TASK_HEADS:
        labels = config.labels or ()
        data.update(id2label={str(i): label for i, label in enumerate(labels)},
                    label2id={label: i for i, label in enumerate(labels)}, num_labels=len(labels))
        if classifier is None:
            classifier = CLASSIFIER_DROPOUT
    if albert:
        data.update(embedding_size=hf.word_embedding_size, num_hidden_groups=hf.num_hidden_groups,
                    inner_group_num=hf.inner_group_num, classifier_dropout_prob=classifier or 0.0)
    elif classifier is not None:
        data["classifier_dropout"] = classifier
    return data


def config_from_transformers(data: Mapping[str, Any]) -> ModelConfig:
    """A transformers ALBERT/BERT ``config.json`` mapping → :class:`ModelConfig` (``bert`` or ``albert``); invalid
    values raise :class:`~zoo.config.InvalidConfig`."""
    model_type = data.get("model_type")
    if model_type not in ("albert", "bert"):
        raise UnsupportedError(f"transformers model_type {model_type!r} is not supported",
                               hint="zoo handles model_type 'albert' and 'bert'")
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
            "hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps", "initializer_range",
            "hidden_dropout_prob", "attention_probs_dropout_prob")
    values = {k: data[k] for k in keys if k in data}
    if model_type == "albert":
        values.update({k: data[k] for k in ("embedding_size", "num_hidden_groups", "inner_group_num") if k in data})
        values.setdefault("embedding_size", 128)
    values.update(_task_values(data))
    return ModelConfig.from_dict({"architecture": model_type, **values}).with_default_dropout()


def _task_values(data: Mapping[str, Any]) -> dict[str, Any]:
    """``task``, ``labels`` (``id2label`` in id order), ``tag_scheme`` and ``classifier_dropout_prob`` of a
    transformers ``*ForTokenClassification`` / ``*ForSequenceClassification`` config (its ``architectures``);
    nothing for any other. A regression or multi-label head is no zoo task: it is left out, with a warning."""
    names = [str(a) for a in data.get("architectures") or ()]
    task = next((t for t in TASK_HEADS if any(a.endswith(_CLASS_SUFFIXES[t]) for a in names)), None)
    if task is None:
        return {}
    labels = _labels(data)
    problem = data.get("problem_type")
    if problem in ("regression", "multi_label_classification") or len(labels) < 2:
        log.warning("a %s head with %s is no single-label classifier (zoo's %s): it is left out, and the model "
                    "loads as an encoder", names[0], f"problem_type {problem}" if problem else "one output", task)
        return {}
    values: dict[str, Any] = {"task": task, "labels": labels}
    if task == "token-classification":
        # transformers' own aggregation reads B-/I- only; E-/S- tags are BIOES, which zoo decodes too
        values["tag_scheme"] = "bioes" if any(str(t)[:2] in ("E-", "S-", "E_", "S_") for t in labels) else "bio"
    # transformers' classifiers: ALBERT's classifier_dropout_prob (default 0.1); BERT's classifier_dropout, which
    # falls back to hidden_dropout_prob (default 0.1)
    dropout = data.get("classifier_dropout_prob") if data.get("model_type") == "albert" else \
        data.get("classifier_dropout", None)
    if dropout is None and data.get("model_type") == "bert":
        dropout = data.get("hidden_dropout_prob")
    values["classifier_dropout_prob"] = CLASSIFIER_DROPOUT if dropout is None else dropout
    return values


def _labels(data: Mapping[str, Any]) -> tuple[Any, ...]:
    """The labels of a transformers classifier config in id order: ``id2label`` (ids 0..n-1), else ``num_labels``
    (transformers' own default names ``LABEL_i``; configs once left ``id2label`` out for two labels)."""
    id2label = data.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        try:
            by_id = {int(key): value for key, value in id2label.items()}
        except (TypeError, ValueError):
            raise InvalidConfig([("id2label", "expected label ids 0..n-1 as keys")]) from None
        if sorted(by_id) != list(range(len(by_id))):
            raise InvalidConfig([("id2label", f"expected the label ids 0..{len(by_id) - 1}, got {sorted(by_id)}")])
        return tuple(by_id[i] for i in range(len(by_id)))
    count = data.get("num_labels", 2)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidConfig([("num_labels", f"expected a positive integer, got {cut(repr(count), 60)}")])
    return tuple(f"LABEL_{i}" for i in range(count))


__all__ = ["HF_HEADS", "config_from_transformers", "from_transformers", "hf_class_name", "hf_equivalent",
           "name_map", "to_transformers", "transformers_config"]
