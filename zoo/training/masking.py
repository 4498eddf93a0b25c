"""Model inputs and masked-LM targets for one pretraining instance, masked as upstream
``create_masked_lm_predictions`` does.

:class:`ExampleBuilder` turns an :class:`~zoo.training.instances.Instance` into an :class:`Example`
(``[CLS] A [SEP] B [SEP]`` padded to ``max_seq_length``, token types, attention mask, MLM labels, the pair label):
``num_to_predict`` as upstream rounds it, candidates the words of A and B, ALBERT's n-gram spans (p(n) ∝ 1/n) or
BERT's single words, 80% ``[MASK]`` / 10% random / 10% unchanged. An example's masks depend only on ``(seed,
epoch, index)``, so any process can rebuild any example and each epoch masks anew (docs/pretraining.md).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from zoo.config import IGNORE_INDEX
from zoo.errors import UsageError
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import TokenizedCorpus
from zoo.training.instances import Instance

EXAMPLE_KEYS: tuple[str, ...] = ("input_ids", "token_type_ids", "attention_mask", "labels",
                                 "seq_relationship_label")

_MASK_DOMAIN = 0x6D61736B  # "mask": keeps the masking streams apart from the document-order stream


@dataclasses.dataclass(frozen=True)
class MaskingConfig:
    """Masking options with upstream's defaults; :meth:`albert` and :meth:`bert` give each family's setup."""

    max_seq_length: int = 128
    masked_lm_prob: float = 0.15
    max_predictions_per_seq: int = 20
    #: Longest n-gram (in words) of ALBERT n-gram masking; 1 is BERT's masking.
    ngram: int = 3
    #: p(n) proportional to 1/n when True (ALBERT's default), to 1/(ngram + 1 - n) when False.
    favor_shorter_ngram: bool = True
    #: Mask whole words (the corpus's ``word_starts``) rather than single tokens.
    whole_word: bool = True

    def __post_init__(self) -> None:
        if self.max_seq_length < 3:
            raise UsageError(f"max_seq_length must be at least 3, got {self.max_seq_length}")
        if not 0.0 <= self.masked_lm_prob <= 1.0:
            raise UsageError(f"masked_lm_prob must lie in [0, 1], got {self.masked_lm_prob}")
        if self.max_predictions_per_seq < 0:
            raise UsageError(f"max_predictions_per_seq must be non-negative, got {self.max_predictions_per_seq}")
        if self.ngram < 1:
            raise UsageError(f"ngram must be at least 1, got {self.ngram}")

    @classmethod
    def albert(cls, max_seq_length: int = 128, **options: object) -> MaskingConfig:
        """google-research/albert: n-gram masking up to 3 words, whole words (``do_whole_word_mask=True``)."""
        return cls(max_seq_length=max_seq_length, **{"ngram": 3, "whole_word": True, **options})  # type: ignore[arg-type]

    @classmethod
    def bert(cls, max_seq_length: int = 128, *, whole_word: bool = False, **options: object) -> MaskingConfig:
        """google-research/bert: single words; a word is one token unless ``whole_word``."""
        return cls(max_seq_length=max_seq_length, **{"ngram": 1, "whole_word": whole_word, **options})  # type: ignore[arg-type]

    def num_to_predict(self, num_tokens: int) -> int:
        """Upstream's prediction budget for a sequence of ``num_tokens`` (special tokens included)."""
        if self.masked_lm_prob == 0 or self.max_predictions_per_seq == 0:
            return 0
        return min(self.max_predictions_per_seq, max(1, round(num_tokens * self.masked_lm_prob)))


@dataclasses.dataclass(frozen=True)
class Example:
    """One model input, every array int64.

    ``input_ids``, ``token_type_ids``, ``attention_mask``, ``labels``: shape ``[max_seq_length]``; ``labels`` is
    the original token id at predicted positions and :data:`IGNORE_INDEX` (-100) elsewhere.
    ``seq_relationship_label``: shape ``[]``; 0 = B follows A (in order / is next), 1 = swapped (SOP) or random
    (NSP), -100 for MLM-only.
    """

    input_ids: np.ndarray
    token_type_ids: np.ndarray
    attention_mask: np.ndarray
    labels: np.ndarray
    seq_relationship_label: np.ndarray

    def as_dict(self) -> dict[str, np.ndarray]:
        """The arrays under the keys of :data:`EXAMPLE_KEYS` (what a collate function stacks)."""
        return {key: getattr(self, key) for key in EXAMPLE_KEYS}


class ExampleBuilder:
    """Builds :class:`Example` s from instances; holds the special ids, the options and the seed."""

    def __init__(self, config: MaskingConfig, *, vocab_size: int, cls_token_id: int, sep_token_id: int,
                 mask_token_id: int, pad_token_id: int, seed: int = 12345) -> None:
        if seed < 0:
            raise UsageError(f"seed must be a non-negative integer, got {seed}")
        if vocab_size < 1:
            raise UsageError(f"vocab_size must be positive, got {vocab_size}")
        self.config = config
        self.vocab_size = vocab_size
        self.cls_token_id = cls_token_id
        self.sep_token_id = sep_token_id
        self.mask_token_id = mask_token_id
        self.pad_token_id = pad_token_id
        self.seed = seed
        self._ngram_cdf = _ngram_cdf(config.ngram, config.favor_shorter_ngram)

    @classmethod
    def from_tokenizer(cls, tokenizer: Tokenizer, config: MaskingConfig, *, seed: int = 12345) -> ExampleBuilder:
        """Take the vocabulary size and special ids from the tokenizer the corpus was built with."""
        return cls(config, vocab_size=tokenizer.vocab_size, cls_token_id=tokenizer.cls_token_id,
                   sep_token_id=tokenizer.sep_token_id, mask_token_id=tokenizer.mask_token_id,
                   pad_token_id=tokenizer.pad_token_id, seed=seed)

    def build(self, corpus: TokenizedCorpus, instance: Instance, epoch: int) -> Example:
        """The example of ``instance`` (from an :class:`~zoo.training.instances.InstanceSampler` over
        ``corpus``) in ``epoch``."""
        a = slice(instance.a_start, instance.a_stop)
        b = slice(instance.b_start, instance.b_stop)
        return self.build_from_ids(corpus.tokens[a], corpus.word_starts[a], corpus.tokens[b],
                                   corpus.word_starts[b], instance.label, epoch=epoch, index=instance.index)

    def build_from_ids(self, a_ids: Sequence[int] | np.ndarray, a_word_starts: Sequence[bool] | np.ndarray,
                       b_ids: Sequence[int] | np.ndarray, b_word_starts: Sequence[bool] | np.ndarray,
                       label: int, *, epoch: int, index: int) -> Example:
        """The example of segments given as ids and word-start flags (B empty for MLM-only)."""
        cfg = self.config
        la, lb = len(a_ids), len(b_ids)
        if len(a_word_starts) != la or len(b_word_starts) != lb:
            raise UsageError("word-start flags and ids differ in length")
        if la == 0:
            raise UsageError("segment A is empty")
        n = la + 2 + (lb + 1 if lb else 0)
        width = cfg.max_seq_length
        if n > width:
            raise UsageError(f"instance {index} has {n} tokens but the masking max_seq_length is {width}",
                             hint="use the same max_seq_length for the InstanceSampler and the MaskingConfig")
        input_ids = np.full(width, self.pad_token_id, np.int64)
        input_ids[0] = self.cls_token_id
        input_ids[1:1 + la] = a_ids
        input_ids[1 + la] = self.sep_token_id
        token_type_ids = np.zeros(width, np.int64)
        if lb:
            input_ids[2 + la:2 + la + lb] = b_ids
            input_ids[2 + la + lb] = self.sep_token_id
            token_type_ids[2 + la:n] = 1
        attention_mask = np.zeros(width, np.int64)
        attention_mask[:n] = 1

        # Candidates are A's and B's tokens, numbered 0..la+lb-1 (position c + 1 in A, c + 2 in B);
        # bounds[w] is the first candidate of word w, bounds[-1] == la + lb.
        if cfg.whole_word:
            starts = np.empty(la + lb, bool)
            starts[:la] = a_word_starts
            starts[la:] = b_word_starts
            starts[0] = True  # a segment cut at the front still starts a word,
            if lb:
                starts[la] = True  # and no word runs across [SEP]
            bounds = [*np.flatnonzero(starts).tolist(), la + lb]
        else:
            bounds = list(range(la + lb + 1))

        rng = np.random.default_rng([_MASK_DOMAIN, self.seed, epoch, index])
        spans = _select_spans(bounds, cfg.num_to_predict(n), rng, self._ngram_cdf)
        labels = np.full(width, IGNORE_INDEX, np.int64)
        if spans:
            candidates = np.array(sorted(c for lo, hi in spans for c in range(bounds[lo], bounds[hi])), np.int64)
            chosen = candidates + 1
            chosen[candidates >= la] += 1
            labels[chosen] = input_ids[chosen]
            k = len(chosen)
            draws = rng.random(2 * k)  # the 80/10/10 choice, then the random replacement ids
            input_ids[chosen[draws[:k] < 0.8]] = self.mask_token_id
            randomised = draws[:k] >= 0.9
            replacement = (draws[k:] * self.vocab_size).astype(np.int64)
            input_ids[chosen[randomised]] = replacement[randomised]
        return Example(input_ids, token_type_ids, attention_mask, labels, np.array(label, np.int64))


def _ngram_cdf(ngram: int, favor_shorter: bool) -> np.ndarray:
    weights = 1.0 / np.arange(1, ngram + 1)
    if not favor_shorter:
        weights = weights[::-1]
    cdf = np.cumsum(weights / weights.sum())
    cdf[-1] = 1.0
    return cdf


def select_mask_spans(word_sizes: Sequence[int] | np.ndarray, num_to_predict: int, rng: np.random.Generator, *,
                      ngram: int = 3, favor_shorter_ngram: bool = True) -> list[tuple[int, int]]:
    """Upstream's choice of masked spans, in the order chosen, as word ranges ``[lo, hi)``.

    ``word_sizes[w]`` is the number of tokens of candidate word ``w``; the chosen spans cover at most
    ``num_to_predict`` tokens, never overlap and always consist of whole words. This is what
    :meth:`ExampleBuilder.build_from_ids` uses (exposed to inspect and test the span distribution).
    """
    bounds = [0, *np.cumsum(np.asarray(word_sizes, np.int64)).tolist()]
    return _select_spans(bounds, num_to_predict, rng, _ngram_cdf(ngram, favor_shorter_ngram))


def _select_spans(bounds: list[int], num_to_predict: int, rng: np.random.Generator,
                  cdf: np.ndarray) -> list[tuple[int, int]]:
    """:func:`select_mask_spans` on word bounds (``bounds[w]`` = tokens before word ``w``; one extra at the end)."""
    count = len(bounds) - 1
    if count <= 0 or num_to_predict <= 0:
        return []
    order = rng.permutation(count).tolist()
    lengths = (np.searchsorted(cdf, rng.random(count), side="right") + 1).tolist() if len(cdf) > 1 else [1] * count
    covered = bytearray(count)
    spans: list[tuple[int, int]] = []
    total = 0
    for lo, n in zip(order, lengths):
        if total >= num_to_predict:
            break
        while n:  # shorter n-grams when the drawn one would overshoot the budget
            hi = min(lo + n, count)
            size = bounds[hi] - bounds[lo]
            if total + size <= num_to_predict:
                break
            n -= 1
        if not n or covered.find(1, lo, hi) != -1:
            continue
        covered[lo:hi] = b"\x01" * (hi - lo)
        total += size
        spans.append((lo, hi))
    return spans


__all__ = [
    "EXAMPLE_KEYS",
    "IGNORE_INDEX",
    "Example",
    "ExampleBuilder",
    "MaskingConfig",
    "select_mask_spans",
]
