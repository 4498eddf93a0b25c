"""Vocab files: one token per line, first column only, the first occurrence of a token keeps its id.

Google's ``vocab_chinese.txt`` may carry a second (score) column. How ids follow lines differs between the
upstream tokenizers, and the normalized file reproduces the one the checkpoint was trained with:

- google-research/albert ``load_vocab`` (``compact=True``) assigns ids in order of *first appearance*: a
  repeated token is skipped and the tokens after it move up by one; an empty line is the token ``" "``.
- google-research/bert ``load_vocab`` (also brightmart's) gives line ``i`` the id ``i``. A repeated line keeps
  its id slot but is replaced by a placeholder that cannot occur in text, so every tokenizer maps the token to
  its first id while ids keep matching the embedding rows.

Either way the normalized file has one line per embedding row (:func:`fit_rows`).

Pure Python (no numpy, no torch): the converters write vocab files with it and :mod:`zoo.tokenizer` reads them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from zoo._fs import read_lines
from zoo.errors import CheckpointError


@dataclasses.dataclass(frozen=True)
class Vocab:
    tokens: list[str]
    duplicates: dict[int, int]  # line of a repeated token -> id of its first occurrence
    empty: list[int]  # lines that were empty
    compact: bool  # repeated lines dropped (ALBERT) rather than replaced by placeholders (BERT)

    def text(self) -> str:
        return "".join(token + "\n" for token in self.tokens)


def read_vocab(path: Path, *, compact: bool = False) -> Vocab:
    lines = read_lines(path, "vocab")
    tokens: list[str] = []
    first: dict[str, int] = {}
    duplicates: dict[int, int] = {}
    empty: list[int] = []
    for line_no, line in enumerate(lines):
        parts = line.split()
        token = parts[0] if parts else ""
        if not token:
            empty.append(line_no)
            # ALBERT reads an empty line as the token " "; either way no text can produce it
            token = "[zoo-empty]" if compact else f"[zoo-empty-{line_no}]"
        if token in first:
            duplicates[line_no] = first[token]
            if compact:
                continue
            token = f"[zoo-dup-{line_no}]"
        else:
            first[token] = len(tokens)
        tokens.append(token)
    if not tokens:
        raise CheckpointError(f"{path}: vocab file is empty")
    return Vocab(tokens, duplicates, empty, compact)


def fit_rows(vocab: Vocab, rows: int, path: Path) -> Vocab:
    """``vocab`` with exactly one token per embedding row (line = id), or a CheckpointError.

    Only the repeated lines a compact vocab dropped can leave rows without a token: they are the last ids, which
    google-research/albert's tokenizer never produces, and get placeholders ``[zoo-unused-<id>]`` that no text
    produces either. Any other difference — more tokens than rows, or fewer than dropped lines explain — means the
    vocab belongs to another model."""
    count = len(vocab.tokens)
    dropped = len(vocab.duplicates) if vocab.compact else 0
    hint = "the vocab file belongs to another model than these weights"
    if count > rows:
        raise CheckpointError(f"{path}: {count} tokens, but the model has vocab_size {rows}", hint=hint)
    if count + dropped < rows:
        explained = f" ({dropped} repeated lines dropped)" if dropped else ""
        raise CheckpointError(f"{path}: {count} tokens{explained} for the {rows} embedding rows of the model: "
                              f"{rows - count - dropped} rows would have no token", hint=hint)
    if count == rows:
        return vocab
    return dataclasses.replace(vocab, tokens=vocab.tokens + [f"[zoo-unused-{i}]" for i in range(count, rows)])


__all__ = ["Vocab", "fit_rows", "read_vocab"]
