"""Continued pretraining: upstream data, losses, optimizers and the training loop.

The data side follows upstream ``create_pretraining_data.py`` but works per epoch instead of writing
``dupe_factor`` static copies, in three steps, one module each::

    from zoo.training.corpus import prepare_corpus
    from zoo.training.instances import InstanceSampler
    from zoo.training.masking import ExampleBuilder, MaskingConfig

    corpus = prepare_corpus(["wiki.txt.gz"], tokenizer, "work/corpus")          # once; reused when unchanged
    sampler = InstanceSampler(corpus, objective="sop", max_seq_length=128, seed=seed)
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.albert(128), seed=seed)
    for instance in itertools.islice(sampler.epoch(epoch, start=resume_index), rank, None, world_size):
        example = builder.build(corpus, instance, epoch)                          # numpy int64 arrays

:mod:`~zoo.training.corpus`
    reads UTF-8 text (one sentence per line, blank line between documents, ``.gz`` too) and tokenizes it,
    streaming, into memory-mapped ``.npy`` arrays with per-token word starts (WordPiece or jieba words).
:mod:`~zoo.training.instances`
    cuts documents into segment pairs with the SOP (ALBERT) or NSP (BERT) label, or single MLM segments,
    deterministically from ``(seed, epoch)``.
:mod:`~zoo.training.masking`
    lays an instance out as ``[CLS] A [SEP] B [SEP]`` and masks it (ALBERT n-grams or BERT tokens, whole
    words optionally), deterministically from ``(seed, epoch, index)``.

Nothing here imports TensorFlow.

The loop itself is :mod:`~zoo.training.trainer` (``zoo.pretrain``), fed by :mod:`~zoo.training.data`, saving
:mod:`~zoo.training.checkpoint`s, optimizing with :mod:`~zoo.training.optim`; upstream TFRecords are read by
:mod:`~zoo.training.tfrecord`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from zoo.training.trainer import TrainingConfig, pretrain


def __getattr__(name: str) -> Any:
    """``pretrain`` and ``TrainingConfig`` load torch: imported on first use."""
    if name in ("pretrain", "TrainingConfig"):
        from zoo.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'zoo.training' has no attribute {name!r}")


__all__ = ["TrainingConfig", "pretrain"]
