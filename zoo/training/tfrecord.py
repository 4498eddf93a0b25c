"""Pretraining data written by upstream ``create_pretraining_data.py``, checked and turned into zoo examples.

google-research/bert and /albert (and brightmart/albert_zh, a copy of them) write masked-LM examples as TFRecords
of ``tf.train.Example`` (read by :mod:`zoo.tf.tfrecord` and :mod:`zoo.tf.example`); this module checks each one is
a usable example and maps it (ALBERT's extra ``token_boundary`` is ignored, as ``run_pretraining.py`` does)::

    input_ids                                   -> input_ids
    input_mask                                  -> attention_mask
    segment_ids                                 -> token_type_ids
    masked_lm_positions/_ids/_weights           -> labels: -100 except at the masked positions
    next_sentence_labels                        -> seq_relationship_label (0 = in order / real next)
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping

import numpy as np

from zoo.config import IGNORE_INDEX
from zoo.errors import DataError
from zoo.tf.example import FeatureValue, ListKind, parse_example, parse_regular_batch
from zoo.tf.proto import ProtoError
from zoo.tf.tfrecord import UPSTREAM_HINT, Compression, Record, iter_records, record_error

#: Features ``run_pretraining.py`` reads (``input_fn_builder``), with the list type each must have.
PRETRAINING_FEATURES: dict[str, ListKind] = {
    "input_ids": "int64",
    "input_mask": "int64",
    "segment_ids": "int64",
    "masked_lm_positions": "int64",
    "masked_lm_ids": "int64",
    "masked_lm_weights": "float",
    "next_sentence_labels": "int64",
}

_RECORD_HINT = ("zoo expects records as create_pretraining_data.py of google-research/bert or albert writes "
                "them; this one was written by other code or has been altered")


class _Invalid(Exception):
    """An Example that decodes but is not a usable pretraining example; becomes a located DataError."""

    def __init__(self, problem: str, hint: str | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.hint = hint or _RECORD_HINT


_VOCAB_HINT = "the file was written with a different vocab file than this model's"


def _require(features: Mapping[str, FeatureValue], name: str) -> np.ndarray:
    value = features.get(name)
    kind = PRETRAINING_FEATURES[name]
    if name not in features:
        present = ", ".join(sorted(features)) or "none"
        raise _Invalid(f"missing feature {name!r} (features present: {present})", UPSTREAM_HINT)
    want = np.int64 if kind == "int64" else np.float32
    if not isinstance(value, np.ndarray) or value.dtype != want:
        got = "no list" if value is None else "a bytes_list" if isinstance(value, list) else \
            "a float_list" if value.dtype == np.float32 else "an int64_list"
        raise _Invalid(f"feature {name!r} is {got}, expected a {kind}_list", UPSTREAM_HINT)
    return value


def _check(arrays: Mapping[str, np.ndarray], seq_length: int | None, max_predictions: int | None,
           vocab_size: int | None) -> np.ndarray:
    """Validate one example's (``[T]``) or a batch's (``[B, T]``) upstream arrays; return the active mask.

    The same checks serve both shapes, so the batched fast path and the per-record path cannot drift apart.
    """
    ids, mask, segments = arrays["input_ids"], arrays["input_mask"], arrays["segment_ids"]
    positions, masked, weights = arrays["masked_lm_positions"], arrays["masked_lm_ids"], arrays["masked_lm_weights"]
    nsp = arrays["next_sentence_labels"]
    length, count = ids.shape[-1], positions.shape[-1]
    if not length:
        raise _Invalid("input_ids is empty")
    if mask.shape != ids.shape or segments.shape != ids.shape:
        raise _Invalid(f"inconsistent lengths: input_ids {length}, input_mask {mask.shape[-1]}, "
                       f"segment_ids {segments.shape[-1]}")
    if seq_length is not None and length != seq_length:
        raise _Invalid(f"sequence length {length}, expected {seq_length}",
                       "the file was written with another --max_seq_length; pass that length or regenerate")
    if masked.shape != positions.shape or weights.shape != positions.shape:
        raise _Invalid(f"inconsistent lengths: masked_lm_positions {count}, masked_lm_ids {masked.shape[-1]}, "
                       f"masked_lm_weights {weights.shape[-1]}")
    if max_predictions is not None and count != max_predictions:
        raise _Invalid(f"{count} masked-LM slots, expected {max_predictions}",
                       "the file was written with another --max_predictions_per_seq; pass that number or "
                       "regenerate")
    if nsp.shape[-1] != 1:
        raise _Invalid(f"next_sentence_labels has {nsp.shape[-1]} values, expected 1")
    for name, values in (("input_mask", mask), ("segment_ids", segments), ("next_sentence_labels", nsp)):
        if (values & ~1).any():  # anything but 0 and 1, negatives included
            raise _Invalid(f"feature {name!r} holds {values[(values & ~1) != 0][0]}; upstream writes only 0 and 1 "
                           "there")
    limit = np.iinfo(np.int64).max if vocab_size is None else vocab_size
    if ids.min() < 0 or ids.max() >= limit:
        raise _Invalid(f"input_ids holds {ids[(ids < 0) | (ids >= limit)][0]}, outside the vocabulary "
                       f"(size {vocab_size})", _VOCAB_HINT)
    active: np.ndarray = weights == 1
    if np.count_nonzero(active) + np.count_nonzero(weights == 0) != weights.size:
        raise _Invalid(f"masked_lm_weights holds {weights[(weights != 0) & (weights != 1)][0]}; upstream writes "
                       "only 1.0 (real) and 0.0 (padding), and zoo's labels carry no per-position weight")
    where, labels = positions[active], masked[active]
    if len(where):
        if where.min() < 0 or where.max() >= length:
            raise _Invalid(f"masked_lm_positions holds {where[(where < 0) | (where >= length)][0]}, outside the "
                           f"sequence of length {length}")
        if labels.min() < 0 or labels.max() >= limit:
            raise _Invalid(f"masked_lm_ids holds {labels[(labels < 0) | (labels >= limit)][0]}, outside the "
                           f"vocabulary (size {vocab_size})", _VOCAB_HINT)
    return active


def _labels(arrays: Mapping[str, np.ndarray], active: np.ndarray) -> np.ndarray:
    """``-100`` everywhere, the masked token's id at each masked position; a repeated position is an error."""
    ids = arrays["input_ids"]
    labels = np.full(ids.shape, IGNORE_INDEX, np.int64)
    if ids.ndim == 1:
        labels[arrays["masked_lm_positions"][active]] = arrays["masked_lm_ids"][active]
    else:
        rows = np.nonzero(active)[0]
        labels[rows, arrays["masked_lm_positions"][active]] = arrays["masked_lm_ids"][active]
    if np.count_nonzero(labels != IGNORE_INDEX) != np.count_nonzero(active):
        raise _Invalid("masked_lm_positions repeats a position; upstream masks each position once")
    return labels


def _training_example(features: Mapping[str, FeatureValue], seq_length: int | None,
                      max_predictions: int | None, vocab_size: int | None) -> dict[str, np.ndarray]:
    arrays = {name: _require(features, name) for name in PRETRAINING_FEATURES}
    active = _check(arrays, seq_length, max_predictions, vocab_size)
    return {
        "input_ids": arrays["input_ids"],
        "attention_mask": arrays["input_mask"],
        "token_type_ids": arrays["segment_ids"],
        "labels": _labels(arrays, active),
        "seq_relationship_label": arrays["next_sentence_labels"].reshape(()),
    }


_BATCH = 256  # records decoded together on the fast path


def _fast_batch(records: list[Record], seq_length: int | None, max_predictions: int | None,
                vocab_size: int | None) -> list[dict[str, np.ndarray]] | None:
    """Convert a batch of regular upstream records with whole-batch numpy operations.

    "Regular" means what ``create_pretraining_data.py`` writes (:func:`zoo.tf.example.parse_regular_batch`).
    Anything else — or any invalid value — returns None, and the caller converts record by record, which
    handles every valid encoding and locates every error.
    """
    arrays = parse_regular_batch([record.data for record in records], PRETRAINING_FEATURES)
    if arrays is None:
        return None
    try:
        active = _check(arrays, seq_length, max_predictions, vocab_size)
        labels = _labels(arrays, active)
    except _Invalid:
        return None
    ids, mask, segments = arrays["input_ids"], arrays["input_mask"], arrays["segment_ids"]
    nsp = arrays["next_sentence_labels"].reshape(-1)
    return [{"input_ids": ids[i], "attention_mask": mask[i], "token_type_ids": segments[i], "labels": labels[i],
             "seq_relationship_label": nsp[i:i + 1].reshape(())} for i in range(len(records))]


def _convert(path: str | os.PathLike[str], records: list[Record], seq_length: int | None,
             max_predictions: int | None, vocab_size: int | None) -> Iterator[dict[str, np.ndarray]]:
    fast = _fast_batch(records, seq_length, max_predictions, vocab_size)
    if fast is not None:
        yield from fast
        return
    names = tuple(PRETRAINING_FEATURES)
    for record in records:
        try:
            features = parse_example(record.data, names)
            example = _training_example(features, seq_length, max_predictions, vocab_size)
        except ProtoError as exc:
            raise record_error(path, record, f"not a valid tf.train.Example: {exc}", UPSTREAM_HINT) from None
        except _Invalid as exc:
            raise record_error(path, record, exc.problem, exc.hint) from None
        yield example


def read_pretraining_examples(path: str | os.PathLike[str], *, seq_length: int | None = None,
                              max_predictions: int | None = None, vocab_size: int | None = None,
                              compression: Compression = "auto") -> Iterator[dict[str, np.ndarray]]:
    """Stream zoo training examples from an upstream pretraining TFRecord file.

    Each example is a dict of ``np.int64`` arrays: ``input_ids``, ``attention_mask``, ``token_type_ids``,
    ``labels`` (all ``[T]``; ``labels`` is ``-100`` except at the masked positions, which hold the original
    token id) and ``seq_relationship_label`` (0-d: 0 = A then B, 1 = random next (NSP) / swapped (SOP)).

    ``seq_length``, ``max_predictions`` and ``vocab_size``, when given, are checked against every record,
    so a file written for another configuration fails at its first record instead of mid-training.
    Every problem is a :class:`~zoo.errors.DataError` naming the file, the record index and its byte offset;
    the examples before a bad record are yielded first. Records are decoded a batch at a time (up to
    256, read ahead), and the arrays of one batch's examples are views of shared arrays.
    """
    records = iter_records(path, compression=compression)
    try:
        while True:
            batch: list[Record] = []
            failure: DataError | None = None
            try:
                for record in records:
                    batch.append(record)
                    if len(batch) == _BATCH:
                        break
            except DataError as exc:  # yield the records before the damage first, then report it
                failure = exc
            yield from _convert(path, batch, seq_length, max_predictions, vocab_size)
            if failure is not None:
                raise failure
            if len(batch) < _BATCH:
                return
    finally:
        records.close()  # a consumer that stops early closes the file now, not at garbage collection


__all__ = ["IGNORE_INDEX", "PRETRAINING_FEATURES", "read_pretraining_examples"]
