"""Vocab normalization for the converters: :class:`~zoo.vocab.Vocab`, :func:`~zoo.vocab.read_vocab` and
:func:`~zoo.vocab.fit_rows` (they live in :mod:`zoo.vocab`, which the tokenizer reads vocab files with too, and
are re-exported here), and :func:`looks_cased`.
"""

from __future__ import annotations

from zoo.vocab import Vocab, fit_rows, read_vocab


def looks_cased(tokens: list[str]) -> bool:
    """Whether a vocab was built from cased text: upstream releases do not record ``do_lower_case``, but an
    uncased vocab has (almost) no token with an upper-case letter, while a cased one has thousands."""
    words = [t for t in tokens if not (t.startswith("[") and t.endswith("]"))]
    upper = sum(1 for t in words if any(ch.isupper() for ch in t))
    return bool(words) and upper / len(words) > 0.02


__all__ = ["Vocab", "fit_rows", "looks_cased", "read_vocab"]
