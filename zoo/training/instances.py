"""Pretraining instances (segment pairs with their pair label), built as upstream ``create_pretraining_data.py``.

An :class:`Instance` is a few integers: the token ranges of segment A and B in the tokenized corpus and the pair
label; masking happens later, per example (:mod:`zoo.training.masking`). Per document the algorithm is exactly
upstream's (target lengths, chunks, ``a_end``, NSP/SOP negatives, ``truncate_seq_pair``; docs/pretraining.md spells
it out). Unlike upstream, every epoch segments anew from ``(seed, epoch)`` — dynamic, where upstream writes
``dupe_factor`` static copies — and documents are shuffled then generated a window of about ``window_tokens`` at a
time, so memory stays bounded. An epoch's instances depend only on the corpus, the options, the seed and the epoch,
never on the number of processes: the training stream (:mod:`zoo.training.feeding`) gives each process a contiguous
share of every global batch.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
from collections import OrderedDict
from collections.abc import Iterator
from typing import Literal

import numpy as np

from zoo.config import IGNORE_INDEX
from zoo.errors import UsageError
from zoo.training.corpus import TokenizedCorpus

logger = logging.getLogger("zoo.training")

Objective = Literal["sop", "nsp", "mlm"]
OBJECTIVES: tuple[str, ...] = ("sop", "nsp", "mlm")
#: The pair label of an MLM-only instance: nothing to predict.
NO_LABEL = IGNORE_INDEX
#: Pair label: B follows A in the text (NSP "is next", SOP "in order").
IN_ORDER = 0
#: Pair label: B comes from another document (NSP, and SOP one-sentence chunks) or A and B are swapped (SOP).
NOT_IN_ORDER = 1
DEFAULT_WINDOW_TOKENS = 1 << 20

_ORDER_DOMAIN = 0x6F726472  # "ordr": keeps the document-order stream apart from the masking streams
_CACHED_EPOCHS = 4


@dataclasses.dataclass(frozen=True, slots=True)
class Instance:
    """One training instance: ``tokens[a_start:a_stop]`` is segment A, ``tokens[b_start:b_stop]`` segment B
    (empty for MLM-only), ``label`` the pair label (:data:`IN_ORDER`, :data:`NOT_IN_ORDER` or
    :data:`NO_LABEL`), ``index`` its position in the epoch (which also seeds its masks)."""

    index: int
    a_start: int
    a_stop: int
    b_start: int
    b_stop: int
    label: int

    @property
    def num_tokens(self) -> int:
        """Length of the model input: ``[CLS] A [SEP] B [SEP]`` or ``[CLS] A [SEP]``."""
        b = self.b_stop - self.b_start
        return self.a_stop - self.a_start + (b + 3 if b else 2)


# (a_start, a_stop, b_start, b_stop, label)
_Raw = tuple[int, int, int, int, int]


class InstanceSampler:
    """Enumerates the instances of an epoch, deterministically from ``(seed, epoch)``.

    ``objective``: ``"sop"`` (ALBERT), ``"nsp"`` (BERT) or ``"mlm"`` (one segment, no pair label).
    ``max_seq_length`` counts ``[CLS]``/``[SEP]``: no instance is longer. ``window_tokens`` sets how many
    tokens' worth of (shuffled) documents are generated and shuffled together (see the module docstring).
    """

    def __init__(self, corpus: TokenizedCorpus, *, objective: Objective = "sop", max_seq_length: int = 128,
                 short_seq_prob: float = 0.1, seed: int = 12345,
                 window_tokens: int = DEFAULT_WINDOW_TOKENS) -> None:
        if objective not in OBJECTIVES:
            raise UsageError(f"objective={objective!r} is not supported", hint=f"use one of {', '.join(OBJECTIVES)}")
        specials = 2 if objective == "mlm" else 3
        if max_seq_length < specials + 2:
            raise UsageError(f"max_seq_length={max_seq_length} is too short for {objective!r}",
                             hint=f"use at least {specials + 2} ({specials} special tokens plus 2 text tokens)")
        if not 0.0 <= short_seq_prob <= 1.0:
            raise UsageError(f"short_seq_prob must lie in [0, 1], got {short_seq_prob}")
        if seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed}")
        if window_tokens < 1:
            raise UsageError(f"window_tokens must be positive, got {window_tokens}")
        self.corpus = corpus
        self.objective: Objective = objective
        self.max_seq_length = max_seq_length
        self.short_seq_prob = short_seq_prob
        self.seed = seed
        self.window_tokens = window_tokens
        self._max_num_tokens = max_seq_length - specials
        self._sentence_offsets = corpus.sentence_offsets
        self._document_offsets = corpus.document_offsets
        self._num_documents = corpus.num_documents
        starts = np.asarray(self._sentence_offsets[np.asarray(self._document_offsets[:-1])])
        stops = np.asarray(self._sentence_offsets[np.asarray(self._document_offsets[1:])])
        self._document_tokens = stops - starts
        self._counts: OrderedDict[int, np.ndarray] = OrderedDict()  # epoch -> instances per window
        if objective != "mlm" and self._num_documents < 2:
            logger.warning("%s: the corpus has a single document, so the %s negatives that take B from "
                           "'another' document take it from the same one", corpus.directory, objective.upper())

    def __repr__(self) -> str:
        return (f"InstanceSampler(objective={self.objective!r}, max_seq_length={self.max_seq_length}, "
                f"short_seq_prob={self.short_seq_prob}, seed={self.seed}, documents={self._num_documents})")

    # ------------------------------------------------------------------------------------------ public
    def epoch(self, epoch: int, *, start: int = 0) -> Iterator[Instance]:
        """The instances of ``epoch`` in order, beginning with index ``start`` (to resume mid-epoch)."""
        if epoch < 0 or start < 0:
            raise UsageError(f"epoch and start must be non-negative, got epoch={epoch}, start={start}")
        order, windows = self._windows(epoch)
        known = self._counts.get(epoch)
        counts: list[int] = []
        base = 0
        for w, (lo, hi) in enumerate(windows):
            if known is not None and base + int(known[w]) <= start:
                base += int(known[w])
                continue
            rng = self._window_rng(epoch, w)
            raw = self._generate(order[lo:hi], rng)
            counts.append(len(raw))
            if base + len(raw) > start:
                rng.shuffle(raw)
                for j in range(max(0, start - base), len(raw)):
                    yield Instance(base + j, *raw[j])
            base += len(raw)
        if known is None:
            self._remember(epoch, np.asarray(counts, np.int64))

    def count(self, epoch: int) -> int:
        """Number of instances in ``epoch`` (it varies a little between epochs: segmentation is random).

        Segments the whole epoch without yielding anything (see the module docstring for the cost); the
        per-window counts are kept for a few epochs, which also lets :meth:`epoch` jump to ``start`` directly.
        """
        known = self._counts.get(epoch)
        if known is None:
            order, windows = self._windows(epoch)
            known = np.asarray([len(self._generate(order[lo:hi], self._window_rng(epoch, w)))
                                for w, (lo, hi) in enumerate(windows)], np.int64)
            self._remember(epoch, known)
        return int(known.sum())

    # ------------------------------------------------------------------------------------------ internals
    def _remember(self, epoch: int, counts: np.ndarray) -> None:
        self._counts[epoch] = counts
        while len(self._counts) > _CACHED_EPOCHS:
            self._counts.popitem(last=False)

    def _windows(self, epoch: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        """This epoch's document order and its windows as ``(lo, hi)`` slices of that order."""
        order = np.random.default_rng([_ORDER_DOMAIN, self.seed, epoch]).permutation(self._num_documents)
        sizes = self._document_tokens[order]
        window_of = (np.cumsum(sizes) - sizes) // self.window_tokens
        cuts = (np.flatnonzero(np.diff(window_of)) + 1).tolist()
        bounds = [0, *cuts, self._num_documents]
        return order, list(itertools.pairwise(bounds))

    def _window_rng(self, epoch: int, window: int) -> random.Random:
        # A str seed goes through sha512: the same stream on every platform and Python process.
        return random.Random(f"zoo.training.instances/{self.seed}/{epoch}/{window}")

    def _generate(self, documents: np.ndarray, rng: random.Random) -> list[_Raw]:
        out: list[_Raw] = []
        for d in documents.tolist():
            self._document(d, rng, out)
        return out

    def _document(self, d: int, rng: random.Random, out: list[_Raw]) -> None:
        """Upstream ``create_instances_from_document`` for document ``d``, appending to ``out``."""
        s0, s1 = int(self._document_offsets[d]), int(self._document_offsets[d + 1])
        offsets: list[int] = self._sentence_offsets[s0:s1 + 1].tolist()
        n = s1 - s0
        max_num = self._max_num_tokens
        target = max_num
        if rng.random() < self.short_seq_prob:
            target = rng.randint(2, max_num)
        pair = self.objective != "mlm"
        nsp = self.objective == "nsp"
        chunk = 0  # first sentence of the current chunk
        length = 0
        i = 0
        while i < n:
            length += offsets[i + 1] - offsets[i]
            if i == n - 1 or length >= target:
                if not pair:
                    a_lo, a_hi = offsets[chunk], offsets[i + 1]
                    af, ab, _, _ = _truncation(a_hi - a_lo, 0, max_num, rng)
                    out.append((a_lo + af, a_hi - ab, 0, 0, NO_LABEL))
                else:
                    k = i - chunk + 1
                    a_end = 1 if k == 1 else rng.randint(1, k - 1)
                    a_lo, a_hi = offsets[chunk], offsets[chunk + a_end]
                    if k == 1 or (nsp and rng.random() < 0.5):
                        label = NOT_IN_ORDER
                        b_lo, b_hi = self._random_b(d, target - (a_hi - a_lo), rng)
                        i -= k - a_end  # put the unused sentences back
                    else:
                        b_lo, b_hi = a_hi, offsets[i + 1]
                        label = IN_ORDER
                        if not nsp and rng.random() < 0.5:
                            label = NOT_IN_ORDER
                            a_lo, a_hi, b_lo, b_hi = b_lo, b_hi, a_lo, a_hi
                    af, ab, bf, bb = _truncation(a_hi - a_lo, b_hi - b_lo, max_num, rng)
                    out.append((a_lo + af, a_hi - ab, b_lo + bf, b_hi - bb, label))
                chunk = i + 1
                length = 0
            i += 1

    def _random_b(self, d: int, target_b: int, rng: random.Random) -> tuple[int, int]:
        """Segment B from a random other document: from a random sentence until ``target_b`` tokens or its end.

        Upstream retries a uniform draw up to 10 times to avoid the current document (and keeps it after
        10 failures); drawing uniformly among the other documents is the same distribution without the rare
        fallback. With a single document there is no other one, and B comes from the same document.
        """
        if self._num_documents > 1:
            other = rng.randrange(self._num_documents - 1)
            other += other >= d
        else:
            other = d
        s0, s1 = int(self._document_offsets[other]), int(self._document_offsets[other + 1])
        first = s0 + rng.randrange(s1 - s0)
        start = int(self._sentence_offsets[first])
        ends = self._sentence_offsets[first + 1:s1 + 1]
        # The first sentence end at or beyond start + target_b (at least one sentence, at most the document).
        k = int(np.searchsorted(ends, start + max(target_b, 1), side="left"))
        return start, int(ends[min(k, len(ends) - 1)])


def _truncation(len_a: int, len_b: int, max_num_tokens: int, rng: random.Random) -> tuple[int, int, int, int]:
    """Upstream ``truncate_seq_pair`` as counts: tokens to drop from (A front, A back, B front, B back).

    Upstream removes one token at a time from the longer side (B on ties), from its front or back by a fair
    coin. Which side loses each token depends only on the lengths, so the counts per side follow directly,
    and the front/back split of a side's ``m`` removals is a sum of ``m`` fair coins: the same distribution,
    in O(1) instead of one random draw per removed token.
    """
    excess = len_a + len_b - max_num_tokens
    if excess <= 0:
        return 0, 0, 0, 0
    gap = len_a - len_b
    if gap > 0:
        first = min(excess, gap)
        from_a, from_b = first, 0
    else:
        first = min(excess, -gap)
        from_a, from_b = 0, first
    rest = excess - first  # the sides are equal now: B, A, B, A, ...
    from_b += (rest + 1) // 2
    from_a += rest // 2
    a_front = rng.getrandbits(from_a).bit_count() if from_a else 0
    b_front = rng.getrandbits(from_b).bit_count() if from_b else 0
    return a_front, from_a - a_front, b_front, from_b - b_front


__all__ = [
    "DEFAULT_WINDOW_TOKENS",
    "IN_ORDER",
    "NOT_IN_ORDER",
    "NO_LABEL",
    "OBJECTIVES",
    "Instance",
    "InstanceSampler",
    "Objective",
]
