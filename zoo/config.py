"""The architecture configuration shared by the registry, the converters, the models and the exporters.

A :class:`ModelConfig` is the manifest's ``config`` mapping (keys and meanings as in transformers'
``AlbertConfig``/``BertConfig``, plus brightmart's ``ln_type``) together with the *architecture* it describes:

``bert``
    token embeddings are H wide; every layer has its own parameters.
``albert``
    Google ALBERT: token/position/type embeddings are E wide, LayerNorm over E, then
    ``embedding_hidden_mapping_in`` (E→H, with bias) when E != H; layers share parameters in
    ``num_hidden_groups`` groups of ``inner_group_num`` layers.
``albert-brightmart``
    brightmart's albert_zh: token embeddings are E wide and immediately projected to H by a bias-free
    ``word_embeddings_2``; position/type embeddings and their LayerNorm are H wide; one shared layer;
    post-LN or pre-LN (``ln_type``; pre-LN has no final LayerNorm).

Every :class:`ModelConfig` is valid: construction checks each value's type and range and their contradictions
(:class:`InvalidConfig`), so every reader — manifest, zoo or transformers ``config.json``, upstream JSON — applies
the same rules and only has to name the file. This module is pure Python (no torch), so the registry and
``zoo list`` can use it cheaply.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from zoo._fs import cut

Architecture = Literal["bert", "albert", "albert-brightmart"]
ARCHITECTURES: tuple[str, ...] = ("bert", "albert", "albert-brightmart")
#: Activation names, with transformers' meaning (``gelu`` is the erf form, ``gelu_new`` the tanh form).
ACTIVATIONS: tuple[str, ...] = ("relu", "gelu", "gelu_new")
LN_TYPES: tuple[str, ...] = ("postln", "preln")

#: The upstream TF naming schemes and the architecture each one writes.
SCHEME_ARCHITECTURE: dict[str, str] = {"google-albert": "albert", "brightmart-albert": "albert-brightmart",
                                       "google-bert": "bert"}
SCHEMES: tuple[str, ...] = tuple(SCHEME_ARCHITECTURE)

#: ``heads=`` values everywhere (``zoo.load``, ``Encoder``, ``zoo export``): ``None`` (encoder and pooler),
#: the pretraining heads from the checkpoint, or a task head initialised fresh.
HEADS: tuple[str | None, ...] = (None, "mlm", "pretraining", "sequence-classification", "token-classification",
                                 "question-answering")
#: Fine-tuned task heads a model directory may carry (``ModelConfig.task``), each a ``heads=`` value.
TASK_HEADS: tuple[str, ...] = ("token-classification", "sequence-classification")
#: Module names of task heads in canonical parameter names (``classifier.*``, ``qa_outputs.*``).
TASK_HEAD_NAMES: tuple[str, ...] = ("classifier", "qa_outputs")
#: Tag schemes a token-classification head may predict (see zoo.tagging).
TAG_SCHEMES: tuple[str, ...] = ("bio", "bioes")
#: Dropout before a classifier whose config states none: upstream run_classifier.py's (``keep_prob=0.9``) and
#: transformers' default, so what a classifier converted from either was trained with.
CLASSIFIER_DROPOUT = 0.1
#: ``heads`` values whose weights come from the checkpoint.
PRETRAINING_HEADS: tuple[str, ...] = ("mlm", "pretraining")
#: Parameter groups a checkpoint may hold besides the encoder (``mlm.*``, ``seq_relationship.*``).
CHECKPOINT_HEADS: tuple[str, ...] = ("mlm", "seq_relationship")
#: The label of positions (and pairs) no loss is computed for: torch's and transformers' ``ignore_index``.
IGNORE_INDEX = -100

#: dtype names everywhere (``zoo.load``, ``zoo convert``, ``zoo pretrain``): canonical names and short forms.
DTYPES: dict[str, str] = {"float32": "float32", "fp32": "float32", "float16": "float16", "fp16": "float16",
                          "bfloat16": "bfloat16", "bf16": "bfloat16"}


def normalize_dtype(name: str) -> str:
    """``float32``/``float16``/``bfloat16`` for any accepted spelling (``fp32``, ``fp16``, ``bf16``).

    ``half`` still works for one release, with a DeprecationWarning. Anything else is a UsageError.
    """
    from zoo.errors import UsageError

    key = str(name).strip().lower().removeprefix("torch.")
    if key == "half":
        import warnings

        warnings.warn('dtype "half" is deprecated; use "float16" (or "fp16")', DeprecationWarning, stacklevel=3)
        return "float16"
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}", hint="use float32, float16 or bfloat16 (or fp32, fp16, bf16)")
    return DTYPES[key]


def present_heads(names: Iterable[str]) -> set[str]:
    """The :data:`CHECKPOINT_HEADS` that tensors named ``names`` (canonical names) hold."""
    prefixes = {head + "." for head in CHECKPOINT_HEADS}
    return {name.split(".", 1)[0] for name in names if name.split(".", 1)[0] + "." in prefixes}


def heads_in(present: set[str] | frozenset[str]) -> str | None:
    """The ``heads`` value a checkpoint with these :data:`CHECKPOINT_HEADS` supports best."""
    if "mlm" in present:
        return "pretraining" if "seq_relationship" in present else "mlm"
    return None


#: Dropout probabilities a config may leave out (``None``).
_OPTIONAL_DROPOUTS = ("hidden_dropout_prob", "attention_probs_dropout_prob", "classifier_dropout_prob")

#: Config keys that only ALBERT architectures accept.
ALBERT_ONLY_KEYS: frozenset[str] = frozenset({"embedding_size", "num_hidden_groups", "inner_group_num"})
#: Keys of google-research/albert's ``AlbertConfig`` that brightmart's ALBERT config (a ``BertConfig`` with
#: ``embedding_size`` and ``ln_type``) does not have.
GOOGLE_ALBERT_KEYS: frozenset[str] = frozenset({"num_hidden_groups", "inner_group_num", "net_structure_type",
                                                "gap_size", "num_memory_blocks", "down_scale_factor"})


def upstream_architecture(data: Mapping[str, Any]) -> str:
    """The architecture an upstream config JSON describes, told from its keys: Google ALBERT's
    ``albert_config.json`` has groups (:data:`GOOGLE_ALBERT_KEYS`); brightmart's ``albert_config_*.json`` has
    ``embedding_size`` (and ``ln_type``) without them; BERT's ``bert_config.json`` has neither."""
    if GOOGLE_ALBERT_KEYS & set(data):
        return "albert"
    if "embedding_size" in data or "ln_type" in data:
        return "albert-brightmart"
    return "bert"
#: Keys every config states (the others have defaults).
REQUIRED_KEYS: tuple[str, ...] = ("architecture", "vocab_size", "hidden_size", "num_hidden_layers",
                                  "num_attention_heads", "intermediate_size")
_INTS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "type_vocab_size", "embedding_size", "num_hidden_groups", "inner_group_num")
_CHOICES = {"architecture": ARCHITECTURES, "hidden_act": ACTIVATIONS, "ln_type": LN_TYPES, "task": TASK_HEADS,
            "tag_scheme": TAG_SCHEMES}
#: Keys a config may leave out (``None``); the task keys are written only for a model with a task head.
_TASK_KEYS = ("task", "labels", "tag_scheme")
_NULLABLE = frozenset({"embedding_size", *_OPTIONAL_DROPOUTS, *_TASK_KEYS})


class InvalidConfig(ValueError):
    """Values that describe no model. ``problems``: ``(key, what is expected)`` pairs; readers name the file."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        super().__init__("; ".join(f"{key}: {what}" for key, what in problems))
        self.problems = problems

    def message(self, origin: object) -> str:
        """``origin: key: what`` for one problem, one line per problem for several."""
        if len(self.problems) == 1:
            return f"{origin}: {self}"
        return f"{origin}: {len(self.problems)} problems in the config:\n  " + \
            "\n  ".join(f"{key}: {what}" for key, what in self.problems)


def _shown(value: Any) -> str:
    """``a string '32'``, ``a boolean``, ``null``: how a wrong value is named in a message (never whole)."""
    if value is None:
        return "null"
    kind = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "a mapping"}.get(type(value), type(value).__name__)
    return kind if isinstance(value, bool) else f"{kind} {cut(repr(value), 60)}"


def _value_problem(key: str, value: Any) -> str | None:
    """What is wrong with one value on its own: type, finiteness, range."""
    if value is None and key in _NULLABLE:
        return None
    if key == "labels":
        if not isinstance(value, tuple) or not value or not all(isinstance(v, str) and v for v in value):
            return f"expected a list of label names, got {_shown(value)}"
        return None if len(set(value)) == len(value) else "names a label twice"
    if key in _CHOICES:
        choices = _CHOICES[key]
        if not isinstance(value, str) or value not in choices:
            return f"expected one of {', '.join(choices)}, got {cut(repr(value), 60)}"
        return None
    if key in _INTS:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected an integer, got {_shown(value)}"
        return None if value >= 1 else f"must be a positive integer, got {value}"
    # the rest are numbers: layer_norm_eps, initializer_range, the dropout probabilities
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {_shown(value)}"
    if not math.isfinite(value):
        return f"expected a finite number, got {value}"
    if key.endswith("_prob"):
        return None if 0 <= value < 1 else f"must be in [0, 1), got {value}"
    return None if value > 0 else f"must be > 0, got {value}"  # layer_norm_eps, initializer_range


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters. Values use transformers' meaning (``gelu`` is the erf form)."""

    architecture: Architecture
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    hidden_act: str = "gelu_new"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    embedding_size: int | None = None
    num_hidden_groups: int = 1
    inner_group_num: int = 1
    ln_type: str = "postln"
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    #: Dropout in training mode; ``None`` means the upstream default (0.1 for BERT, 0 for both ALBERTs).
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    #: Dropout before a fine-tuned classifier, as it was trained (``None``: not a fine-tuned classifier). An
    #: export writes it as transformers' ``classifier_dropout_prob`` (ALBERT) / ``classifier_dropout`` (BERT).
    classifier_dropout_prob: float | None = None
    #: A fine-tuned head the weights carry (:data:`TASK_HEADS`), ``None`` for none.
    task: str | None = None
    #: The task head's outputs in id order (transformers' ``id2label``): tags ``O``, ``B-X``, ``I-X`` … for token
    #: classification, class names for sequence classification.
    labels: tuple[str, ...] | None = None
    #: The tag scheme of a token-classification head (:data:`TAG_SCHEMES`).
    tag_scheme: str | None = None

    def __post_init__(self) -> None:
        """Every config is valid: a value of the wrong type or range, or a contradiction, is an
        :class:`InvalidConfig` here, so no reader (manifest, directory, upstream JSON) can let one through."""
        problems = [(f.name, what) for f in dataclasses.fields(self)
                    if (what := _value_problem(f.name, getattr(self, f.name))) is not None]
        if not problems:
            problems = self._contradictions()
        if problems:
            raise InvalidConfig(problems)

    # ----------------------------------------------------------------------------------------- derived
    @property
    def is_albert(self) -> bool:
        return self.architecture != "bert"

    @property
    def _default_dropout(self) -> float:
        """The upstream default dropout probability: 0.1 for BERT, 0 for both ALBERTs."""
        return 0.0 if self.is_albert else 0.1

    @property
    def hidden_dropout(self) -> float:
        return self.hidden_dropout_prob if self.hidden_dropout_prob is not None else self._default_dropout

    @property
    def attention_dropout(self) -> float:
        if self.attention_probs_dropout_prob is not None:
            return self.attention_probs_dropout_prob
        return self._default_dropout

    @property
    def word_embedding_size(self) -> int:
        """Width of the token embedding table (E for both ALBERTs, H for BERT)."""
        return self.embedding_size if self.is_albert and self.embedding_size else self.hidden_size

    @property
    def embedding_width(self) -> int:
        """Width in which position/type embeddings are added and normalised (E only for Google ALBERT)."""
        return self.word_embedding_size if self.architecture == "albert" else self.hidden_size

    @property
    def has_mapping_in(self) -> bool:
        """Google ALBERT maps E→H with ``embedding_hidden_mapping_in`` only when the widths differ."""
        return self.architecture == "albert" and self.word_embedding_size != self.hidden_size

    @property
    def mlm_width(self) -> int:
        """Width of the MLM transform output (E for Google ALBERT, H otherwise)."""
        return self.embedding_width

    @property
    def num_layer_sets(self) -> int:
        """How many distinct layer parameter sets the checkpoint holds."""
        if self.architecture == "bert":
            return self.num_hidden_layers
        return self.num_hidden_groups * self.inner_group_num

    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def layer_schedule(self) -> list[int]:
        """Index of the parameter set applied at each step of the forward pass, in order.

        BERT applies set ``l`` at layer ``l``. ALBERT (both variants) applies, for each of the
        ``num_hidden_layers`` layers, the ``inner_group_num`` sets of group
        ``int(layer / num_hidden_layers * num_hidden_groups)`` — the exact expression of the TF code.
        """
        if self.architecture == "bert":
            return list(range(self.num_hidden_layers))
        schedule: list[int] = []
        for layer in range(self.num_hidden_layers):
            group = int(layer / self.num_hidden_layers * self.num_hidden_groups)
            schedule.extend(group * self.inner_group_num + inner for inner in range(self.inner_group_num))
        return schedule

    # ------------------------------------------------------------------------------------ parameters
    def layer_param_count(self) -> int:
        h, i = self.hidden_size, self.intermediate_size
        attention = 4 * (h * h + h) + 2 * h
        ffn = (h * i + i) + (i * h + h) + 2 * h
        return attention + ffn

    def param_count(self) -> int:
        """Parameters of the encoder including the pooler, without pretraining heads."""
        v, h, d = self.vocab_size, self.hidden_size, self.embedding_width
        e = self.word_embedding_size
        n = v * e + (self.max_position_embeddings + self.type_vocab_size) * d + 2 * d
        if self.architecture == "albert-brightmart":
            n += e * h  # word_embeddings_2, no bias
        if self.has_mapping_in:
            n += e * h + h
        n += self.num_layer_sets * self.layer_param_count()
        n += h * h + h  # pooler
        return n

    def head_param_count(self) -> int:
        """Parameters of the MLM and SOP/NSP pretraining heads (the MLM decoder is tied)."""
        h, m = self.hidden_size, self.mlm_width
        mlm = h * m + m + 2 * m + self.vocab_size
        return mlm + 2 * h + 2

    # ---------------------------------------------------------------------------------- validation
    def _contradictions(self) -> list[tuple[str, str]]:
        """Values that are each valid but contradict each other, as ``(key, what is wrong)`` pairs."""
        found: list[tuple[str, str]] = []
        if self.hidden_size % self.num_attention_heads:
            found.append(("num_attention_heads",
                          (f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                           f"{self.num_attention_heads}")))
        if self.ln_type == "preln" and self.architecture != "albert-brightmart":
            found.append(("ln_type", "preln exists only in brightmart's albert_zh (scheme brightmart-albert)"))
        if self.is_albert:
            if self.embedding_size is None:
                found.append(("embedding_size", "required for ALBERT"))
            if self.num_hidden_groups > self.num_hidden_layers:
                found.append(("num_hidden_groups",
                              (f"{self.num_hidden_groups} groups for {self.num_hidden_layers} layers: "
                               "some groups would never run")))
            if self.architecture == "albert-brightmart" and self.num_layer_sets != 1:
                found.append(("num_hidden_groups", "brightmart ALBERT has exactly one shared layer (1 group, 1 inner)"))
        elif self.embedding_size not in (None, self.hidden_size):
            found.append(("embedding_size", "BERT has no factorized embeddings (albert only)"))
        if (self.task is None) != (self.labels is None):
            found.append(("labels" if self.task else "task", "a task head states its task and its labels"))
        if (self.tag_scheme is not None) != (self.task == "token-classification"):
            found.append(("tag_scheme", "a token-classification head (and only that) states its tag scheme"))
        return found

    # -------------------------------------------------------------------------------- (de)serialise
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready mapping (zoo's ``config.json``). ALBERT-only keys are left out for BERT."""
        data = dataclasses.asdict(self)
        if not self.is_albert:
            for key in ALBERT_ONLY_KEYS:
                data.pop(key)
        for key in (*_OPTIONAL_DROPOUTS, *_TASK_KEYS):
            if data[key] is None:
                data.pop(key)
        if self.labels is not None:
            data["labels"] = list(self.labels)
        return data

    def with_default_dropout(self) -> ModelConfig:
        """The same config, with dropout probabilities equal to the architecture's default written as ``None``
        (so a config read back from transformers or upstream JSON equals the manifest's)."""
        values: dict[str, Any] = {}
        if self.hidden_dropout_prob is not None and self.hidden_dropout_prob == self._default_dropout:
            values["hidden_dropout_prob"] = None
        if self.attention_probs_dropout_prob is not None and \
                self.attention_probs_dropout_prob == self._default_dropout:
            values["attention_probs_dropout_prob"] = None
        return dataclasses.replace(self, **values) if values else self

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], architecture: str | None = None) -> ModelConfig:
        """Build from zoo's own mapping (manifest ``config`` or zoo ``config.json``). Unknown and missing keys,
        and every value :meth:`__post_init__` refuses, raise :class:`InvalidConfig`."""
        values = dict(data)
        if architecture is not None:
            values["architecture"] = architecture
        names = {f.name for f in dataclasses.fields(cls)}
        problems = [(cut(str(key), 60), "unknown key") for key in values if key not in names]
        problems += [(key, "missing required key") for key in REQUIRED_KEYS if key not in values]
        if problems:
            raise InvalidConfig(problems)
        if isinstance(values.get("labels"), list):
            values["labels"] = tuple(values["labels"])
        return cls(**values)

    @classmethod
    def from_upstream(cls, data: Mapping[str, Any], architecture: str) -> ModelConfig:
        """Read an upstream ``*config*.json`` (google-research/bert, /albert, brightmart) with upstream meaning.

        The TF code computes GELU with the tanh approximation, so upstream ``"gelu"`` becomes ``gelu_new``.
        Keys zoo does not use (pooler_*, directionality, ...) are ignored; dropout probabilities are kept.
        Invalid values raise :class:`InvalidConfig`.
        """
        act = data.get("hidden_act", "gelu")
        # a release is a pretraining checkpoint: a classifier_dropout_prob in its JSON (transformers-style copies
        # carry transformers' default) describes no classifier it has
        keep = {f.name for f in dataclasses.fields(cls)} - {"architecture", "hidden_act", "classifier_dropout_prob",
                                                            *_TASK_KEYS}
        values = {k: v for k, v in data.items() if k in keep}
        if architecture == "bert":
            for key in ALBERT_ONLY_KEYS:
                values.pop(key, None)
        values.update(architecture=architecture, hidden_act="gelu_new" if act == "gelu" else act)
        return cls.from_dict(values).with_default_dropout()
