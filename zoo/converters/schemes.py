"""The three TF naming schemes: detection from variable names, and the conversion plan.

A plan pairs every checkpoint variable with its canonical parameter (or marks it as optimizer state to
skip) and checks every shape against the config. Anything else is an error listing all offenders — never
a silent partial load.
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from types import ModuleType

from zoo.config import SCHEME_ARCHITECTURE, SCHEMES, ModelConfig
from zoo.converters import brightmart, google_albert, google_bert
from zoo.converters.canonical import encoder_shapes, head_shapes, task_shapes
from zoo.converters.names import HEAD_NAME_MAPS, TASK_NAME_MAPS, transposed
from zoo.errors import CheckpointError, UnsupportedError, UsageError

_MODULES: dict[str, ModuleType] = {m.SCHEME: m for m in (google_albert, brightmart, google_bert)}
assert set(_MODULES) == set(SCHEMES)

#: Last path segments of optimizer slot variables (Adam in Google's code, LAMB in brightmart's).
SLOT_SUFFIXES = ("adam_m", "adam_v", "lamb_m", "lamb_v")

_MARKERS = {
    "brightmart-albert": re.compile(r"^bert/(embeddings/word_embeddings_2\Z|encoder/layer_shared/)"),
    "google-albert": re.compile(r"^bert/encoder/transformer/group_\d+/inner_group_\d+/"),
    "google-bert": re.compile(r"^bert/encoder/layer_\d+/"),
}
_KERAS = re.compile(r"(\.ATTRIBUTES/|/layer_normalization|^_CHECKPOINTABLE_OBJECT_GRAPH\Z)")


def skip_reason(name: str) -> str | None:
    """Why a variable is not model weights (optimizer state, step counter), or ``None``."""
    parts = name.split("/")
    if name == "global_step":
        return "global_step"
    if parts[-1] in SLOT_SUFFIXES:
        return parts[-1]
    for part in parts:
        if part.startswith("AdamWeightDecayOptimizer"):
            return part
    return None


def detect_scheme(names: Iterable[str]) -> str:
    """Which upstream code wrote a checkpoint, judged from its variable names."""
    names = [n for n in names if skip_reason(n) is None]
    found = sorted(scheme for scheme, marker in _MARKERS.items() if any(marker.search(n) for n in names))
    if len(found) == 1:
        return found[0]
    if found:
        raise CheckpointError(f"variable names mix the {' and '.join(found)} naming schemes",
                              hint="pass --scheme explicitly if you know which one the model uses")
    if any(_KERAS.search(n) for n in names):
        raise UnsupportedError("this looks like a TF2/Keras object-based checkpoint (names such as "
                               "'.../layer_normalization_3/gamma'); zoo converts the TF1 name-based releases "
                               "of google-research/bert, google-research/albert and brightmart/albert_zh")
    sample = ", ".join(sorted(names)[:5]) or "none"
    raise CheckpointError(f"cannot tell the naming scheme from the variable names (first: {sample})",
                          hint=f"pass --scheme ({', '.join(SCHEMES)})")


def check_scheme(scheme: str) -> str:
    if scheme not in _MODULES:
        raise UsageError(f"unknown scheme {scheme!r}; expected auto or one of {', '.join(SCHEMES)}")
    return scheme


@dataclasses.dataclass(frozen=True)
class Target:
    """One checkpoint variable's destination."""

    tf_name: str
    name: str  # canonical
    shape: tuple[int, ...]  # canonical shape
    transpose: bool


@dataclasses.dataclass(frozen=True)
class Plan:
    scheme: str
    targets: list[Target]
    heads: dict[str, bool]
    skipped: dict[str, int]  # reason -> count
    skipped_names: list[str]


def _fmt(shape: Iterable[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _listing(items: list[str], limit: int = 20) -> str:
    shown = "\n  ".join(items[:limit])
    more = f"\n  ... and {len(items) - limit} more" if len(items) > limit else ""
    return f"\n  {shown}{more}"


def name_map(scheme: str, config: ModelConfig, heads: Iterable[str] = ()) -> dict[str, str]:
    """``{TF variable name: canonical name}`` of the ``scheme``'s checkpoint for ``config``: the encoder, the
    given pretraining ``heads`` (``mlm``, ``seq_relationship``) and the task head ``config`` states where upstream
    has one (:data:`~zoo.converters.names.TASK_NAME_MAPS`). The converter reads through it, the TF exporter
    (:mod:`zoo.converters.tf_export`) writes through its inverse."""
    names: dict[str, str] = _MODULES[check_scheme(scheme)].encoder_names(config)
    for head in heads:
        names.update(HEAD_NAME_MAPS[head])
    if config.task in TASK_NAME_MAPS:
        names.update(TASK_NAME_MAPS[config.task])
    return names


def tf_task_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The canonical shapes of the task head a TF checkpoint of ``config`` holds: upstream's classifier for a
    sequence classifier, nothing otherwise (token classification has no upstream convention)."""
    return task_shapes(config) if config.task in TASK_NAME_MAPS else {}


def plan(scheme: str, config: ModelConfig, shapes: Mapping[str, tuple[int, ...]]) -> Plan:
    """Map a checkpoint's variables (name → stored shape) onto canonical parameters for ``config``.

    Raises :class:`CheckpointError` naming every unmapped variable, missing parameter or wrong shape.
    """
    check_scheme(scheme)
    if SCHEME_ARCHITECTURE[scheme] != config.architecture:
        raise CheckpointError(f"scheme {scheme} writes architecture {SCHEME_ARCHITECTURE[scheme]!r}, "
                              f"but the config says {config.architecture!r}")
    heads = {head: any(n in shapes for n in HEAD_NAME_MAPS[head]) for head in HEAD_NAME_MAPS}
    names = name_map(scheme, config, [head for head, present in heads.items() if present])
    canonical = encoder_shapes(config)
    for head, present in heads.items():
        if present:
            canonical.update(head_shapes(config)[head])
    canonical.update(tf_task_shapes(config))
    assert set(names.values()) == set(canonical), "name map and canonical shapes disagree"

    skipped: Counter[str] = Counter()
    skipped_names = []
    unmapped = []
    for name in shapes:
        reason = skip_reason(name)
        if reason:
            skipped[reason] += 1
            skipped_names.append(name)
        elif name not in names:
            unmapped.append(name)
    missing = [n for n in names if n not in shapes]
    problems = []
    if unmapped:
        problems.append(f"{len(unmapped)} variable(s) that the {scheme} scheme does not map:"
                        + _listing(sorted(unmapped)))
    if missing:
        problems.append(f"{len(missing)} expected variable(s) missing from the checkpoint:" + _listing(missing))
    if problems:
        raise CheckpointError(
            f"checkpoint does not match the {scheme} scheme for this config "
            f"({config.architecture}, {config.num_layer_sets} layer set(s)):\n" + "\n".join(problems),
            hint="check --scheme and the config (num_hidden_layers, num_hidden_groups, inner_group_num)")

    targets = []
    wrong = []
    for tf_name, canonical_name in names.items():
        shape = canonical[canonical_name]
        transpose = transposed(tf_name)
        expected = tuple(reversed(shape)) if transpose else shape
        found = tuple(shapes[tf_name])
        if found != expected:
            wrong.append(f"{tf_name}: expected {_fmt(expected)}, found {_fmt(found)}")
        targets.append(Target(tf_name, canonical_name, shape, transpose))
    if wrong:
        raise CheckpointError(
            f"{len(wrong)} variable shape(s) disagree with the config (vocab_size={config.vocab_size}, "
            f"hidden_size={config.hidden_size}, embedding_size={config.embedding_size}, "
            f"intermediate_size={config.intermediate_size}, "
            f"max_position_embeddings={config.max_position_embeddings}):" + _listing(wrong),
            hint="the config does not describe this checkpoint; fix the config or pick the right one")
    return Plan(scheme, targets, heads, dict(sorted(skipped.items())), sorted(skipped_names))
