"""Tags, spans, and the mapping between a text's units and its WordPiece tokens, for token classification.

Fine-tuning (:mod:`zoo.training`) and tagging with a fine-tuned model (``Loaded.tag``) use these functions alike,
so predictions become spans one way everywhere: :func:`decode_tags` reads tags exactly as seqeval's default
(conlleval) mode does. Labels belong to *units* — a text's characters, or a CoNLL file's tokens — never to
WordPiece pieces: :func:`align` maps tokens to units with the tokenizer's offsets (a unit's label trains the first
token covering it; predictions come back to every unit, spaces and merged digit runs included), and
:func:`window_ranges` cuts long texts into overlapping windows, each token predicted from the window where it has
the most context (BERT ``run_squad.py``'s rule). docs/finetuning.md ("Characters, WordPiece and long texts") gives
the rules. Pure Python and numpy: importing this module costs no torch and no seqeval.
"""

from __future__ import annotations

import bisect
import dataclasses
import itertools
import re
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from zoo.config import IGNORE_INDEX
from zoo.errors import UsageError

if TYPE_CHECKING:
    from zoo.tokenizer import Tokenizer

#: Input tag schemes and the prefixes each allows besides ``O``. BMES is BIOES with ``M-`` for ``I-``; both
#: spellings are read in either name, which only says what the file looked like.
SCHEME_PREFIXES: dict[str, frozenset[str]] = {
    "bio": frozenset("BI"), "iob1": frozenset("BI"), "io": frozenset("I"),
    "bioes": frozenset("BIMES"), "bmes": frozenset("BIMES"),
}
SCHEMES: tuple[str, ...] = tuple(SCHEME_PREFIXES)
#: Schemes a model is trained on.
INTERNAL_SCHEMES: tuple[str, ...] = ("bio", "bioes")
_ALIASES = {"iob2": "bio", "iobes": "bioes"}
_TAG = re.compile(r"([BIMES])[-_](.+)", re.DOTALL)

Units = Sequence[tuple[int, int]]


class TagError(ValueError):
    """A tag that is ill-formed or from another scheme, at ``index`` of sequence ``sequence`` where known: the
    reader of a file turns it into a DataError naming the file and line."""

    def __init__(self, message: str, *, index: int | None = None, sequence: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.index = index
        self.sequence = sequence


@dataclasses.dataclass(frozen=True, order=True)
class Span:
    """An entity: characters ``[start, end)`` (or positions, where a function says so) and its label.

    ``score`` (predictions only: the mean probability of the entity's labelled tokens) is not part of its
    identity, so a predicted span equals the gold span it matches."""

    start: int
    end: int
    label: str
    score: float | None = dataclasses.field(default=None, compare=False)


# ------------------------------------------------------------------------------------------------ schemes
def scheme_name(name: str, *, internal: bool = False) -> str:
    """The canonical name of a tag scheme (``iob2`` → ``bio``, any case); UsageError for an unknown one."""
    key = _ALIASES.get(str(name).strip().lower(), str(name).strip().lower())
    choices = INTERNAL_SCHEMES if internal else SCHEMES
    if key not in choices:
        raise UsageError(f"unknown tag scheme {name!r}", hint=f"use one of: {', '.join(choices)}")
    return key


def parse_tag(tag: str) -> tuple[str, str]:
    """``("O", "")`` for ``O``; ``(prefix, label)`` for ``B-X``, ``I-X``, ``M-X``, ``E-X``, ``S-X`` (or with
    ``_``). TagError for anything else."""
    if tag == "O":
        return "O", ""
    m = _TAG.fullmatch(tag)
    if m is None:
        raise TagError(f"{tag!r} is not a tag: expected O or B-, I-, E-, S-, M- followed by a label")
    return m.group(1), m.group(2)


def detect_scheme(sequences: Iterable[Sequence[str]]) -> str:
    """The scheme a file's tags are written in: ``bmes`` (an ``M-``), ``bioes`` (an ``E-``/``S-``), ``iob1``
    (every ``B-X`` follows an ``X`` tag, as IOB1 writes it), ``bio`` (other ``B-``), ``io`` (only ``I-``), and
    ``bio`` when every tag is ``O``. A malformed tag is a TagError carrying ``sequence`` and ``index``."""
    prefixes: set[str] = set()
    b_after_other = False
    for k, tags in enumerate(sequences):
        previous = ""
        for i, tag in enumerate(tags):
            try:
                prefix, label = parse_tag(tag)
            except TagError as exc:
                raise TagError(exc.message, index=i, sequence=k) from None
            prefixes.add(prefix)
            b_after_other = b_after_other or (prefix == "B" and previous != label)
            previous = label
    if "M" in prefixes:
        return "bmes"
    if prefixes & {"E", "S"}:
        return "bioes"
    if "B" in prefixes:
        return "bio" if b_after_other else "iob1"
    return "io" if "I" in prefixes else "bio"


def tags_to_spans(tags: Sequence[str], scheme: str) -> list[Span]:
    """Gold tags written in ``scheme`` → spans over positions, read as seqeval's default mode reads them (an
    ``I-`` that continues nothing starts an entity, so IOB1 and IO read right; ``M-`` is ``I-``). A malformed
    tag, or one ``scheme`` does not have, is a TagError carrying its ``index``."""
    scheme = scheme_name(scheme)
    allowed = SCHEME_PREFIXES[scheme]
    internal = []
    for i, tag in enumerate(tags):
        try:
            prefix, label = parse_tag(tag)
        except TagError as exc:
            raise TagError(exc.message, index=i) from None
        if prefix != "O" and prefix not in allowed:
            raise TagError(f"{tag!r} is a tag from another scheme: the tags here are {scheme.upper()}", index=i)
        internal.append("O" if prefix == "O" else f"{'I' if prefix == 'M' else prefix}-{label}")
    return decode_tags(internal)


def decode_tags(tags: Sequence[str]) -> list[Span]:
    """Internal tags (``O``, ``B-X``, ``I-X``, ``E-X``, ``S-X``) → spans over positions, exactly as seqeval's
    default mode (``get_entities``) decodes them, ill-formed sequences included: an ``I-X`` after ``O`` or after
    another type starts an entity, a ``B-`` or ``S-`` always does, an ``E-``/``S-`` ends one.

    The one decoder of predictions: the metric, training and tagging all go through it (seqeval itself takes a
    second to import, too slow for tagging a sentence)."""
    spans = []
    prev_prefix, prev_label, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        prefix, label = ("O", "") if tag == "O" else (tag[0], tag[2:])
        if prev_prefix != "O" and (prev_prefix in ("E", "S") or prev_label != label
                                   or (prev_prefix in ("B", "I") and prefix in ("B", "S", "O"))):
            spans.append(Span(begin, i, prev_label))
        if prefix != "O" and (prefix in ("B", "S") or prev_label != label
                              or (prefix in ("I", "E") and prev_prefix in ("O", "E", "S"))):
            begin = i
        prev_prefix, prev_label = prefix, label
    return spans


def spans_to_tags(spans: Iterable[Span], length: int, scheme: str = "bio") -> list[str]:
    """Spans over positions ``0..length`` → one internal tag per position, in ``bio`` or ``bioes``.
    ValueError for a span outside or overlapping another."""
    bioes = scheme_name(scheme, internal=True) == "bioes"
    tags = ["O"] * length
    for span in sorted(spans):
        if not 0 <= span.start < span.end <= length:
            raise ValueError(f"span [{span.start}, {span.end}) is outside 0..{length}")
        if any(tag != "O" for tag in tags[span.start:span.end]):
            raise ValueError(f"span [{span.start}, {span.end}) {span.label} overlaps another")
        tags[span.start:span.end] = [f"I-{span.label}"] * (span.end - span.start)
        if bioes and span.end - span.start == 1:
            tags[span.start] = f"S-{span.label}"
            continue
        tags[span.start] = f"B-{span.label}"
        if bioes:
            tags[span.end - 1] = f"E-{span.label}"
    return tags


# -------------------------------------------------------------------------------------- units and spans
def char_units(text: str) -> list[tuple[int, int]]:
    """Every character of ``text`` a unit."""
    return [(i, i + 1) for i in range(len(text))]


def unit_spans(spans: Iterable[Span], units: Units) -> list[Span]:
    """Character spans → spans over unit positions. ValueError for a span that does not start and end on unit
    boundaries."""
    starts, ends = [u[0] for u in units], [u[1] for u in units]
    out = []
    for span in spans:
        i, j = bisect.bisect_left(starts, span.start), bisect.bisect_left(ends, span.end)
        if i >= len(units) or j >= len(units) or starts[i] != span.start or ends[j] != span.end or j < i:
            raise ValueError(f"span [{span.start}, {span.end}) does not start and end on unit boundaries")
        out.append(Span(i, j + 1, span.label, span.score))
    return out


def unit_tags(spans: Iterable[Span], units: Units, scheme: str = "bio") -> list[str]:
    """Character spans → one internal tag per unit (what the metric and training labels are made of)."""
    return spans_to_tags(unit_spans(spans, units), len(units), scheme)


class TagSet:
    """The tags a model predicts and their ids: ``O``, then for each label in order ``B-``, ``I-`` (``bio``) or
    ``B-``, ``I-``, ``E-``, ``S-`` (``bioes``). The ids are a model's label ids (an export's ``id2label``)."""

    def __init__(self, labels: Sequence[str], scheme: str = "bio") -> None:
        self.scheme = scheme_name(scheme, internal=True)
        self.labels: tuple[str, ...] = tuple(labels)
        if len(set(self.labels)) != len(self.labels) or not all(self.labels):
            raise UsageError(f"labels must be distinct and non-empty: {list(self.labels)}")
        prefixes = "BI" if self.scheme == "bio" else "BIES"
        self.tags: tuple[str, ...] = ("O", *(f"{p}-{label}" for label in self.labels for p in prefixes))
        self.ids: dict[str, int] = {tag: i for i, tag in enumerate(self.tags)}

    @classmethod
    def from_tags(cls, tags: Sequence[str]) -> TagSet:
        """The tag set of a head whose outputs are ``tags``, in this order (a model's ``labels``, an export's
        ``id2label``; a model made elsewhere may order them its own way): every tag of a ``bio`` or ``bioes`` set,
        each once. ValueError otherwise."""
        parsed = [parse_tag(tag) for tag in tags]
        labels = list(dict.fromkeys(label for prefix, label in parsed if prefix != "O"))
        scheme = "bioes" if any(prefix in ("E", "S") for prefix, _ in parsed) else "bio"
        made = cls(labels, scheme)
        if sorted(made.tags) != sorted(tags):
            raise ValueError(f"tags {list(tags)[:8]}… are not a {scheme} tag set: it has {list(made.tags)[:8]}…")
        made.tags = tuple(tags)
        made.ids = {tag: i for i, tag in enumerate(made.tags)}
        return made

    def __len__(self) -> int:
        return len(self.tags)

    def __repr__(self) -> str:
        return f"TagSet({list(self.labels)!r}, scheme={self.scheme!r})"

    def unit_ids(self, spans: Iterable[Span], units: Units) -> list[int]:
        """Gold character spans → one tag id per unit. ValueError for a label outside the set."""
        tags = unit_tags(spans, units, self.scheme)
        unknown = sorted({tag[2:] for tag in tags if tag not in self.ids})
        if unknown:
            raise ValueError(f"labels {unknown} are not in the tag set {list(self.labels)}")
        return [self.ids[tag] for tag in tags]


# ------------------------------------------------------------------------------------------- alignment
@dataclasses.dataclass(frozen=True)
class Alignment:
    """A text's WordPiece tokens (no [CLS]/[SEP]) and its units, mapped both ways (rules: module docstring)."""

    text: str
    units: list[tuple[int, int]]
    input_ids: list[int]
    #: per token: the characters it covers
    offsets: list[tuple[int, int]]
    #: per token: the units ``[first, last)`` it overlaps (empty when it covers no character)
    token_units: list[tuple[int, int]]
    #: per token: the unit whose label it carries, or -1 (IGNORE_INDEX in training)
    token_unit: list[int]
    #: per unit: the tokens covering it (empty for a unit the tokenizer dropped: a space, a control character)
    unit_tokens: list[list[int]]
    #: per token: a ``##`` piece, continuing the word of the token before it
    continues: list[bool]

    @property
    def heads(self) -> list[int]:
        """The labelled tokens, in order: the positions predictions are decoded over."""
        return [t for t, u in enumerate(self.token_unit) if u >= 0]


def align(tokenizer: Tokenizer, text: str, units: Units | None = None) -> Alignment:
    """Tokenize ``text`` and map its tokens to ``units`` (default: every character)."""
    return align_batch(tokenizer, [text], [units])[0]


def align_batch(tokenizer: Tokenizer, texts: Sequence[str],
                units: Sequence[Units | None] | None = None) -> list[Alignment]:
    """:func:`align` for many texts; the Rust tokenizer encodes them in parallel."""
    all_units = list(units) if units is not None else [None] * len(texts)
    if len(all_units) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(all_units)} unit lists")
    return [_align(text, list(u) if u is not None else char_units(text), ids, offsets,
                   [tokenizer.tokens[i].startswith("##") for i in ids])
            for text, u, (ids, offsets) in zip(texts, all_units, _tokenize(tokenizer, texts))]


def _tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
    """Ids and character offsets of each text, without the [CLS]/[SEP] the template adds. The one place user text
    is tokenized for tagging: text that spells a special token (``[MASK]``) is plain text here."""
    if not texts:
        return []
    encoded = tokenizer(list(texts), return_offsets_mapping=True, split_special_tokens=True)
    return [(ids[1:-1], [(int(s), int(e)) for s, e in offsets[1:-1]])
            for ids, offsets in zip(encoded["input_ids"], encoded["offset_mapping"])]


def _align(text: str, units: list[tuple[int, int]], ids: list[int], offsets: list[tuple[int, int]],
           continues: list[bool]) -> Alignment:
    if any(not s < e for s, e in units) or any(a[1] > b[0] for a, b in itertools.pairwise(units)) or (
            units and (units[0][0] < 0 or units[-1][1] > len(text))):
        raise ValueError("units must be non-empty, in order, non-overlapping character ranges of the text")
    ends = [e for _, e in units]
    token_units, token_unit = [], []
    unit_tokens: list[list[int]] = [[] for _ in units]
    for t, (start, end) in enumerate(offsets):
        first = last = bisect.bisect_right(ends, start) if end > start else len(units)
        while last < len(units) and units[last][0] < end:
            unit_tokens[last].append(t)
            last += 1
        token_units.append((first, last) if last > first else (0, 0))
        token_unit.append(first if last > first and unit_tokens[first][0] == t else -1)
    return Alignment(text, units, list(ids), offsets, token_units, token_unit, unit_tokens, continues)


# ---------------------------------------------------------------------------------------------- windows
@dataclasses.dataclass(frozen=True)
class Window:
    """One model input: tokens ``[start, end)`` of an alignment between [CLS] and [SEP]; int64 arrays, unpadded.
    ``labels`` is IGNORE_INDEX except at labelled tokens (all IGNORE_INDEX when no tags were given)."""

    start: int
    end: int
    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray


def window_ranges(alignment: Alignment, *, max_seq_length: int, stride: int) -> list[tuple[int, int]]:
    """Token ranges ``[start, end)`` of overlapping windows that fit ``max_seq_length`` with [CLS] and [SEP],
    neighbours sharing about ``stride`` tokens; edges split neither a unit's tokens nor a word's ``##`` pieces
    unless one alone is longer than a window."""
    room = max_seq_length - 2
    if room < 1:
        raise UsageError(f"max_seq_length {max_seq_length} leaves no room for text besides [CLS] and [SEP]")
    if not 0 <= stride < room:
        raise UsageError(f"stride must be at least 0 and below max_seq_length - 2 = {room}, got {stride}")
    n, ok = len(alignment.input_ids), _edges(alignment)
    ranges: list[tuple[int, int]] = []
    start = covered = 0
    while True:
        end = min(start + room, n)
        if end < n:  # back to an edge that splits no unit, still adding tokens
            end = next((e for e in range(end, max(start, covered), -1) if ok[e]), end)
        ranges.append((start, end))
        if end >= n:
            return ranges
        covered, target = end, max(end - stride, start + 1)
        start = next((s for s in range(target, start, -1) if ok[s]), 0) or next(
            (s for s in range(target + 1, end + 1) if ok[s]), target)


def _edges(alignment: Alignment) -> list[bool]:
    """``ok[t]``: a window edge before token ``t`` splits neither a unit's tokens nor a word's ``##`` pieces."""
    ok = [True] * (len(alignment.input_ids) + 1)
    covered = 0  # units before this one are covered by earlier tokens only
    for t, (first, last) in enumerate(alignment.token_units):
        ok[t] = not alignment.continues[t]
        if last > first:
            ok[t] = ok[t] and first >= covered
            covered = max(covered, last)
    return ok


def encode_tagged(tokenizer: Tokenizer, alignment: Alignment, unit_tags: Sequence[int] | None = None, *,
                  max_seq_length: int, stride: int) -> list[Window]:
    """The model inputs of one text: its windows (:func:`window_ranges`) with token types 0, attention mask 1 and,
    when ``unit_tags`` (one tag id per unit, :meth:`TagSet.unit_ids`) are given, the training labels."""
    labels = np.full(len(alignment.input_ids), IGNORE_INDEX, dtype=np.int64)
    if unit_tags is not None:
        if len(unit_tags) != len(alignment.units):
            raise ValueError(f"{len(unit_tags)} tags for {len(alignment.units)} units")
        for t, u in enumerate(alignment.token_unit):
            if u >= 0:
                labels[t] = unit_tags[u]
    ids = np.asarray(alignment.input_ids, dtype=np.int64)
    cls, sep, ignore = [tokenizer.cls_token_id], [tokenizer.sep_token_id], [IGNORE_INDEX]
    windows = []
    for start, end in window_ranges(alignment, max_seq_length=max_seq_length, stride=stride):
        input_ids = np.concatenate([cls, ids[start:end], sep]).astype(np.int64)
        windows.append(Window(start, end, input_ids, np.zeros_like(input_ids), np.ones_like(input_ids),
                              np.concatenate([ignore, labels[start:end], ignore]).astype(np.int64)))
    return windows


# ------------------------------------------------------------------------------------------ predictions
def batched(windows: Sequence[Sequence[Window]], batch_size: int,
            run: Callable[[list[Window]], Iterable[np.ndarray]]) -> list[list[np.ndarray]]:
    """``run`` (the model's logits, a row per window) over the windows of every text, ``batch_size`` windows at a
    time, windows of similar length together (less padding); the rows come back per text, in window order."""
    flat = [(t, j) for t, ws in enumerate(windows) for j in range(len(ws))]
    order = sorted(flat, key=lambda tj: len(windows[tj[0]][tj[1]].input_ids))
    outputs: list[list[Any]] = [[None] * len(ws) for ws in windows]
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for (t, j), row in zip(chunk, run([windows[t][j] for t, j in chunk])):
            outputs[t][j] = row
    return outputs


def predict_spans(alignment: Alignment, windows: Sequence[Window], outputs: Sequence[np.ndarray],
                  tagset: TagSet) -> list[Span]:
    """The model's outputs for a text's windows → its entities, in characters of ``alignment.text``.

    ``outputs[k]`` belongs to ``windows[k]``: logits ``[L, len(tagset)]`` or predicted tag ids ``[L]``, row 0 for
    [CLS], padding after the window's [SEP] allowed. Each token's prediction comes from the window where it has
    the most context; the labelled tokens' tags are decoded by :func:`decode_tags` and each entity widened to its
    units (module docstring). ``score``: the mean softmax probability of the entity's labelled tokens (``None``
    when ids were given)."""
    tag_ids, probs = _combine(alignment, windows, outputs, len(tagset))
    heads = alignment.heads
    token_spans = decode_tags([tagset.tags[tag_ids[t]] for t in heads])
    spans = []
    for span in token_spans:
        first_unit = alignment.token_unit[heads[span.start]]
        group_end = heads[span.end] if span.end < len(heads) else len(alignment.input_ids)
        last_unit = max(alignment.token_units[t][1] for t in range(heads[span.end - 1], group_end))
        score = float(np.mean([probs[t] for t in heads[span.start:span.end]]))
        spans.append(Span(alignment.units[first_unit][0], alignment.units[last_unit - 1][1], span.label,
                          None if np.isnan(score) else score))
    return spans


def _combine(alignment: Alignment, windows: Sequence[Window], outputs: Sequence[np.ndarray],
             num_tags: int) -> tuple[np.ndarray, np.ndarray]:
    """Per token: the predicted tag id and its probability (NaN for ids), from its best-context window."""
    n = len(alignment.input_ids)
    if len(outputs) != len(windows):
        raise ValueError(f"{len(outputs)} outputs for {len(windows)} windows")
    best = np.full(n, -1.0)
    tag_ids, probs = np.zeros(n, dtype=np.int64), np.full(n, np.nan)
    for window, output in zip(windows, outputs):
        output, length = np.asarray(output), window.end - window.start
        if output.shape[0] < length + 2 or output.ndim not in (1, 2) or (
                output.ndim == 2 and output.shape[1] != num_tags):
            raise ValueError(f"output of shape {output.shape} for a window of {length} tokens and {num_tags} tags")
        body = output[1:length + 1]
        if body.ndim == 2:
            p = np.exp(body - body.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            ids, prob = p.argmax(axis=-1), p.max(axis=-1)
        else:
            ids, prob = body.astype(np.int64), np.full(length, np.nan)
            if length and not (ids.min() >= 0 and ids.max() < num_tags):
                raise ValueError(f"predicted tag ids outside 0..{num_tags - 1}")
        pos = np.arange(length)
        context = np.minimum(pos, length - 1 - pos) + 0.01 * length
        better = context > best[window.start:window.end]
        where = np.nonzero(better)[0] + window.start
        best[where], tag_ids[where], probs[where] = context[better], ids[better], prob[better]
    if (best < 0).any():
        raise ValueError("the windows do not cover every token of the text")
    return tag_ids, probs


__all__ = ["INTERNAL_SCHEMES", "SCHEMES", "SCHEME_PREFIXES", "Alignment", "Span", "TagError", "TagSet", "Window",
           "align", "align_batch", "batched", "char_units", "decode_tags", "detect_scheme", "encode_tagged",
           "parse_tag", "predict_spans", "scheme_name", "spans_to_tags", "tags_to_spans", "unit_spans", "unit_tags",
           "window_ranges"]
