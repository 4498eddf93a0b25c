"""Labelled data for fine-tuning, read into one representation per task: :func:`read_tagged` (token
classification: CoNLL columns in any tag scheme, JSON lines with character offsets, CSV/TSV with entity strings →
:class:`TaggedData` of :class:`LabelledText`, gold spans over characters or the given tokens) and
:func:`read_classification` (TSV/CSV ``label``/``text_a``/``text_b`` or JSON lines → :class:`ClassificationData`
of :class:`LabelledPair`). The format is told from the extension and the content (``format=`` overrides); files
are read a line at a time (:data:`MAX_LINE_BYTES` at most); every problem is a :class:`~zoo.errors.DataError`
naming the file and line. docs/finetuning.md ("Data formats") gives every rule.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from zoo._fs import cut
from zoo.errors import DataError, NotFoundError, UsageError
from zoo.tagging import Span, TagError, char_units, detect_scheme, scheme_name, tags_to_spans

log = logging.getLogger("zoo.training")

#: The longest line read (4 MiB): a longer one is refused rather than read into memory.
MAX_LINE_BYTES = 4 << 20
TAGGED_FORMATS: tuple[str, ...] = ("conll", "jsonl", "csv", "tsv")
CLASSIFICATION_FORMATS: tuple[str, ...] = ("jsonl", "csv", "tsv")
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")
_UTF8_HINT = "the file must be UTF-8; convert it first, e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`"
_COLUMNS = re.compile(r"[ \t]+")


@dataclasses.dataclass(frozen=True)
class LabelledText:
    """One text and its entities (character spans). ``units``: the given tokens' character ranges, or ``None``
    when every character is a unit. ``line``: where it starts in its file."""

    text: str
    spans: tuple[Span, ...]
    units: tuple[tuple[int, int], ...] | None = None
    line: int = 0

    def unit_offsets(self) -> list[tuple[int, int]]:
        """The units as character ranges (every character, when ``units`` is ``None``)."""
        return list(self.units) if self.units is not None else char_units(self.text)


@dataclasses.dataclass(frozen=True)
class LabelledPair:
    """One text (or pair) to classify and its label; ``line``: where it is in its file."""

    text_a: str
    text_b: str | None
    label: str
    line: int = 0


@dataclasses.dataclass(frozen=True)
class TaggedData:
    """A token-classification file: its examples, the labels in order of first appearance, the format, the tag
    scheme it was written in (``spans`` for JSON lines and CSV/TSV) and notes for the receipt."""

    path: Path
    format: str
    scheme: str
    examples: tuple[LabelledText, ...]
    labels: tuple[str, ...]
    notes: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    """A text-classification file: its examples, the labels in order of first appearance, the format, notes."""

    path: Path
    format: str
    examples: tuple[LabelledPair, ...]
    labels: tuple[str, ...]
    notes: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- public
def read_tagged(path: str | Path, *, format: str | None = None, scheme: str | None = None,
                text_column: str = "text", entity_column: str | None = None, entity_label: str | None = None,
                entity_sep: str | None = None) -> TaggedData:
    """Read a token-classification file (module docstring). ``scheme``: the CoNLL tag scheme (detected when
    ``None``; pass the training file's to read dev/test the same way). ``entity_column`` given, a ``.csv`` file,
    or a header naming ``text_column`` and the entity column (default ``entities``) mean CSV/TSV."""
    path = _existing(path)
    fmt = _tagged_format(path, format, [text_column, entity_column or "entities"], entity_column is not None)
    if fmt == "conll":
        return _read_conll(path, None if scheme is None else scheme_name(scheme))
    if fmt == "jsonl":
        examples, notes = _read_entity_jsonl(path)
        return _tagged(path, fmt, "spans", examples, notes)
    column = entity_column or "entities"
    examples, notes = _read_entity_table(path, "\t" if fmt == "tsv" else ",", text_column, column,
                                         entity_label or column, entity_sep)
    return _tagged(path, fmt, "spans", examples, notes)


def read_classification(path: str | Path, *, format: str | None = None) -> ClassificationData:
    """Read a text-classification file: TSV/CSV with ``label``, ``text_a`` (and ``text_b``) columns, or JSON
    lines with ``text``, ``label`` (and ``text_pair``)."""
    path = _existing(path)
    fmt = _classification_format(path, format)
    notes: list[str] = []
    if fmt == "jsonl":
        examples = [_pair_record(path, lineno, record) for lineno, record in _json_records(path)]
    else:
        examples = _read_pair_table(path, "\t" if fmt == "tsv" else ",", notes)
    if not examples:
        raise DataError(f"{path}: holds no examples", hint=_CLASSIFICATION_HINT)
    labels = tuple(dict.fromkeys(example.label for example in examples))
    return ClassificationData(path, fmt, tuple(examples), labels, tuple(notes))


def label_set(train: TaggedData | ClassificationData, labels: Sequence[str] | None = None) -> tuple[str, ...]:
    """The labels in id order: ``labels`` as given (each training label must be among them), else the training
    file's in order of first appearance. DataError when there is none."""
    if labels is not None:
        given = tuple(labels)
        if not given or len(set(given)) != len(given) or not all(given):
            raise UsageError(f"labels must be distinct, non-empty strings, got {list(given)}")
        check_labels(train, given)
        return given
    if not train.labels:
        raise DataError(f"{train.path}: no {'entity' if isinstance(train, TaggedData) else 'label'} in the file",
                        hint="a training file needs labelled examples")
    return train.labels


def check_labels(data: TaggedData | ClassificationData, labels: Sequence[str]) -> None:
    """DataError naming file and line of the first label in ``data`` outside ``labels`` (a dev/test label the
    training file never had)."""
    known = set(labels)
    for example in data.examples:
        found = [example.label] if isinstance(example, LabelledPair) else [span.label for span in example.spans]
        unknown = next((label for label in found if label not in known), None)
        if unknown is not None:
            raise DataError(f"{data.path}:{example.line}: label {unknown!r} is not among the training labels "
                            f"({cut(', '.join(labels), 200)})",
                            hint="fix the label, or give the full label set (--labels)")


# ------------------------------------------------------------------------------------------------ lines
def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.exists():
        raise NotFoundError(f"{path}: data file does not exist")
    if not path.is_file():
        raise NotFoundError(f"{path}: is not a regular file")
    return path


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text without its line ending)`` of a UTF-8 file, one line in memory at a time."""
    with open(path, "rb") as fh:
        for lineno in itertools.count(1):
            raw = fh.readline(MAX_LINE_BYTES + 1)
            if not raw:
                return
            if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                raise DataError(f"{path}:{lineno}: line longer than {MAX_LINE_BYTES >> 20} MiB",
                                hint="one example per line; split long documents into paragraphs")
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte "
                                f"{exc.start + 1} of the line)", hint=_UTF8_HINT) from None
            yield lineno, (text.removeprefix("\ufeff") if lineno == 1 else text).rstrip("\r\n")


def _first_line(path: Path) -> tuple[int, str]:
    """The first non-blank line; DataError for an empty file."""
    for lineno, text in _lines(path):
        if text.strip():
            return lineno, text
    raise DataError(f"{path}: the file is empty", hint="a data file needs at least one labelled example")


def _is_json_object(text: str) -> bool:
    try:
        return isinstance(json.loads(text), dict)
    except ValueError:
        return False


def _tagged_format(path: Path, format: str | None, columns: list[str], table: bool) -> str:
    """CSV/TSV for ``.csv``, an entity column given, or a header naming both columns; else CoNLL."""
    fmt, first = _json_or_given(path, format, TAGGED_FORMATS)
    if fmt is not None:
        return fmt
    delimiter = "\t" if "\t" in first else ","
    if table or path.suffix.lower() == ".csv" or set(columns) <= set(_split_header(first, delimiter)):
        return "tsv" if delimiter == "\t" else "csv"
    return "conll"


def _classification_format(path: Path, format: str | None) -> str:
    fmt, first = _json_or_given(path, format, CLASSIFICATION_FORMATS)
    return fmt if fmt is not None else "tsv" if "\t" in first else "csv"


def _json_or_given(path: Path, format: str | None, choices: tuple[str, ...]) -> tuple[str | None, str]:
    """The given format, or ``jsonl`` by extension or a first line that is a JSON object; else None and the
    first line, for the caller to tell the table formats apart."""
    if format is not None:
        return _given_format(format, choices), ""
    if path.suffix.lower() in _JSON_SUFFIXES:
        return "jsonl", ""
    _, first = _first_line(path)
    return ("jsonl" if _is_json_object(first) else None), first


def _given_format(format: str, choices: tuple[str, ...]) -> str:
    if format.lower() not in choices:
        raise UsageError(f"unknown data format {format!r}", hint=f"use one of: {', '.join(choices)}")
    return format.lower()


def _split_header(line: str, delimiter: str) -> list[str]:
    return [field.strip() for field in next(csv.reader([line], delimiter=delimiter))] if line else []


# ------------------------------------------------------------------------------------------------ CoNLL
_CONLL_HINT = ("CoNLL: one `token tag` per line (whitespace between), a blank line between sentences; a table of "
               "texts and entity strings needs --entity-column")
_CLASSIFICATION_HINT = ("a header naming label, text_a (and text_b), tab- or comma-separated; or JSON lines "
                        '{"text": ..., "label": ...}')


def _conll_sentences(path: Path) -> tuple[list[tuple[list[str], list[str], list[int]]], int]:
    """``(tokens, tags, line numbers)`` per sentence, and the number of columns."""
    sentences: list[tuple[list[str], list[str], list[int]]] = []
    current: tuple[list[str], list[str], list[int]] = ([], [], [])
    columns, first = 0, 0
    for lineno, line in _lines(path):
        fields = _COLUMNS.split(line.strip(" \t")) if line.strip(" \t") else []
        if not fields or fields[0] == "-DOCSTART-":
            if current[0]:
                sentences.append(current)
            current = ([], [], [])
            continue
        if len(fields) < 2:
            raise DataError(f"{path}:{lineno}: expected a token and its tag, got {cut(line, 60)!r}",
                            hint=_CONLL_HINT)
        if not columns:
            columns, first = len(fields), lineno
        elif len(fields) != columns:
            raise DataError(f"{path}:{lineno}: {len(fields)} columns, but line {first} has {columns}",
                            hint="every line of a CoNLL file has the same columns: token first, tag last")
        current[0].append(fields[0])
        current[1].append(fields[-1])
        current[2].append(lineno)
    if current[0]:
        sentences.append(current)
    return sentences, columns


def _read_conll(path: Path, scheme: str | None) -> TaggedData:
    sentences, columns = _conll_sentences(path)
    if not sentences:
        raise DataError(f"{path}: the file is empty", hint=_CONLL_HINT)
    try:
        scheme = scheme or detect_scheme(tags for _, tags, _ in sentences)
    except TagError as exc:
        line = sentences[exc.sequence or 0][2][exc.index or 0]  # detect_scheme always says where
        raise DataError(f"{path}:{line}: {exc.message}", hint=_CONLL_HINT) from None
    notes = []
    if columns > 2:
        notes.append(f"{path}: {columns} columns; the first is read as the token, the last as the tag, "
                     f"columns 2-{columns - 1} are ignored")
        log.info("%s", notes[-1])
    examples = []
    for tokens, tags, lines in sentences:
        try:
            spans = tags_to_spans(tags, scheme)
        except TagError as exc:
            raise DataError(f"{path}:{lines[exc.index or 0]}: {exc.message}",
                            hint=f"the file's tags are {scheme.upper()}; fix the tag, or name the scheme "
                                 "(--tag-scheme)") from None
        examples.append(_unit_text(tokens, spans, lines[0]))
    return _tagged(path, "conll", scheme, examples, notes)


def _unit_text(tokens: list[str], spans: list[Span], line: int) -> LabelledText:
    """A sentence of given tokens: characters joined as they are, words joined by spaces (then the tokens are
    the units); ``spans`` over token positions become character spans."""
    if all(len(token) == 1 for token in tokens):
        return LabelledText("".join(tokens), tuple(spans), None, line)
    units, start = [], 0
    for token in tokens:
        units.append((start, start + len(token)))
        start += len(token) + 1
    chars = tuple(Span(units[s.start][0], units[s.end - 1][1], s.label) for s in spans)
    return LabelledText(" ".join(tokens), chars, tuple(units), line)


def _tagged(path: Path, fmt: str, scheme: str, examples: list[LabelledText], notes: list[str]) -> TaggedData:
    if not examples:
        raise DataError(f"{path}: holds no examples", hint="a data file needs at least one labelled example")
    labels = tuple(dict.fromkeys(span.label for example in examples for span in example.spans))
    return TaggedData(path, fmt, scheme, tuple(examples), labels, tuple(notes))


# ------------------------------------------------------------------------------------------- JSON lines
def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            what = "a JSON array: zoo reads JSON lines" if line.strip() == "[" else f"not JSON ({exc})"
            raise DataError(f"{path}:{lineno}: {what}", hint="one JSON object per line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}",
                            hint="one JSON object per line")
        yield lineno, record


def _get(path: Path, lineno: int, record: dict[str, Any], key: str, kind: type | tuple[type, ...],
         what: str) -> Any:
    """``record[key]``, which must be of ``kind`` (a bool is no int); DataError naming the line otherwise."""
    value = record.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        found = "missing" if key not in record else f"{type(value).__name__} {cut(json.dumps(value), 40)}"
        raise DataError(f"{path}:{lineno}: {key!r} must be {what}, found {found}",
                        hint='e.g. {"text": "张三在北京", "entities": [{"start": 3, "end": 5, "label": "LOC"}]}')
    return value


def _read_entity_jsonl(path: Path) -> tuple[list[LabelledText], list[str]]:
    examples, trimmed = [], 0
    for lineno, record in _json_records(path):
        text = _get(path, lineno, record, "text", str, "a string")
        if not text:
            raise DataError(f"{path}:{lineno}: empty text")
        spans = []
        for entity in _get(path, lineno, record, "entities", list, "a list (use [] for none)"):
            if not isinstance(entity, dict):
                raise DataError(f"{path}:{lineno}: each entity must be an object with start, end and label")
            span = _entity_span(path, lineno, text, entity)
            trimmed += span != Span(entity["start"], entity["end"], span.label)
            spans.append(span)
        examples.append(LabelledText(text, tuple(_no_overlaps(path, lineno, spans)), None, lineno))
    notes = [f"{path}: spaces trimmed from the edges of {trimmed} entities"] if trimmed else []
    for note in notes:
        log.info("%s", note)
    return examples, notes


def _entity_span(path: Path, lineno: int, text: str, entity: dict[str, Any]) -> Span:
    start = _get(path, lineno, entity, "start", int, "a character offset")
    end = _get(path, lineno, entity, "end", int, "a character offset")
    label = _get(path, lineno, entity, "label", str, "a string")
    if not label:
        raise DataError(f"{path}:{lineno}: an entity has an empty label")
    if not 0 <= start < end <= len(text):
        raise DataError(f"{path}:{lineno}: entity [{start}, {end}) {label} is outside the text of {len(text)} "
                        "characters", hint="offsets are characters, not bytes; end is exclusive")
    if "text" in entity and entity["text"] != text[start:end]:
        raise DataError(f"{path}:{lineno}: entity [{start}, {end}) says {cut(str(entity['text']), 40)!r} but the "
                        f"text there is {text[start:end]!r}", hint="offsets are characters, not bytes")
    piece = text[start:end]
    if not piece.strip():
        raise DataError(f"{path}:{lineno}: entity [{start}, {end}) {label} holds only whitespace")
    start += len(piece) - len(piece.lstrip())
    end -= len(piece) - len(piece.rstrip())
    return Span(start, end, label)


def _no_overlaps(path: Path, lineno: int, spans: list[Span]) -> list[Span]:
    """Sorted, an exact repeat dropped; DataError for two entities that overlap."""
    spans = sorted(set(spans))
    for a, b in itertools.pairwise(spans):
        if b.start < a.end:
            raise DataError(f"{path}:{lineno}: entities [{a.start}, {a.end}) {a.label} and [{b.start}, {b.end}) "
                            f"{b.label} overlap", hint="entities are flat: no nesting, no overlaps")
    return spans


def _pair_record(path: Path, lineno: int, record: dict[str, Any]) -> LabelledPair:
    text = _get(path, lineno, record, "text", str, "a string")
    pair = record.get("text_pair")
    if pair is not None and not isinstance(pair, str):
        raise DataError(f"{path}:{lineno}: 'text_pair' must be a string")
    label = _get(path, lineno, record, "label", (str, int), "a string (or an integer)")
    if not text or not str(label):
        raise DataError(f"{path}:{lineno}: empty {'text' if not text else 'label'}")
    return LabelledPair(text, pair, str(label), lineno)


# -------------------------------------------------------------------------------------------- CSV / TSV
def _table(path: Path, delimiter: str, required: Sequence[str], hint: str
           ) -> tuple[dict[str, int], Iterator[tuple[int, list[str]]]]:
    """The header's columns and the rows after it, ``(line, fields)``; blank rows skipped. DataError for a
    missing column (naming those there are), a row with another number of fields, or malformed CSV."""
    lines = (line + "\n" for _, line in _lines(path))
    reader = (csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE, strict=True) if delimiter == "\t"
              else csv.reader(lines, delimiter=delimiter, strict=True))

    def rows() -> Iterator[tuple[int, list[str]]]:
        start = 1
        try:
            for fields in reader:
                line, start = start, reader.line_num + 1
                if any(field.strip() for field in fields):
                    yield line, fields
        except csv.Error as exc:
            raise DataError(f"{path}:{start}: malformed {'TSV' if delimiter == chr(9) else 'CSV'} ({exc})",
                            hint=hint) from None

    it = rows()
    first = next(it, None)
    if first is None:
        raise DataError(f"{path}: the file is empty", hint=hint)
    line, header = first
    columns = {name.strip(): i for i, name in enumerate(header)}
    missing = [name for name in required if name not in columns]
    if missing:
        raise DataError(f"{path}:{line}: no column{'s' * (len(missing) > 1)} {', '.join(map(repr, missing))} in the "
                        f"header; the columns are "
                        f"{', '.join(map(repr, columns))}", hint=hint)

    def checked() -> Iterator[tuple[int, list[str]]]:
        for lineno, fields in it:
            if len(fields) != len(header):
                raise DataError(f"{path}:{lineno}: {len(fields)} fields, but the header has {len(header)}",
                                hint="a TSV field holds no tab" if delimiter == "\t" else
                                "quote fields that hold commas")
            yield lineno, fields

    return columns, checked()


def _read_entity_table(path: Path, delimiter: str, text_column: str, entity_column: str, label: str,
                       sep: str | None) -> tuple[list[LabelledText], list[str]]:
    hint = ("a header with a text column and an entity column (--text-column, --entity-column); "
            "several entities in a cell separated by --entity-sep")
    columns, rows = _table(path, delimiter, [text_column, entity_column], hint)
    examples = []
    for lineno, fields in rows:
        text, cell = fields[columns[text_column]], fields[columns[entity_column]]
        if not text.strip():
            raise DataError(f"{path}:{lineno}: empty text")
        names = [name.strip() for name in (cell.split(sep) if sep else [cell])]
        spans, missing = occurrences(text, [name for name in names if name], label)
        if missing:
            raise DataError(f"{path}:{lineno}: entity {missing[0]!r} does not occur in the text",
                            hint="entities are matched exactly (case too); several in a cell need --entity-sep")
        examples.append(LabelledText(text, tuple(spans), None, lineno))
    return examples, []


def occurrences(text: str, strings: Sequence[str], label: str) -> tuple[list[Span], list[str]]:
    """Spans of every occurrence of ``strings`` in ``text``, longest strings first and never overlapping (a
    shorter string inside a tagged longer one is not tagged there), and the strings that do not occur."""
    found, missing = [], []
    for string in dict.fromkeys(strings):
        at = text.find(string)
        if at < 0:
            missing.append(string)
        while at >= 0:
            found.append((at, at + len(string)))
            at = text.find(string, at + 1)
    taken = bytearray(len(text))
    spans = []
    for start, end in sorted(found, key=lambda se: (se[0] - se[1], se[0])):
        if not any(taken[start:end]):
            taken[start:end] = b"\x01" * (end - start)
            spans.append(Span(start, end, label))
    return sorted(spans), missing


def _read_pair_table(path: Path, delimiter: str, notes: list[str]) -> list[LabelledPair]:
    columns, rows = _table(path, delimiter, ["label", "text_a"], _CLASSIFICATION_HINT)
    extra = [name for name in columns if name not in ("label", "text_a", "text_b")]
    if extra:
        notes.append(f"{path}: columns {', '.join(map(repr, extra))} are ignored")
        log.info("%s", notes[-1])
    examples = []
    for lineno, fields in rows:
        text_a, label = fields[columns["text_a"]], fields[columns["label"]].strip()
        text_b = fields[columns["text_b"]] if "text_b" in columns else None
        if not text_a or not label:
            raise DataError(f"{path}:{lineno}: empty {'text_a' if not text_a else 'label'}")
        examples.append(LabelledPair(text_a, text_b, label, lineno))
    return examples


__all__ = ["CLASSIFICATION_FORMATS", "MAX_LINE_BYTES", "TAGGED_FORMATS", "ClassificationData", "LabelledPair",
           "LabelledText", "TaggedData", "check_labels", "label_set", "occurrences", "read_classification",
           "read_tagged"]
