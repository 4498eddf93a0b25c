"""zoo.training.instances: upstream create_pretraining_data segmentation (SOP, NSP, MLM-only), per epoch."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import UsageError
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import TokenizedCorpus, prepare_corpus
from zoo.training.instances import IN_ORDER, NO_LABEL, NOT_IN_ORDER, Instance, InstanceSampler, _truncation

CHARS = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可里后"


def vocab_file(directory: Path) -> Path:
    path = directory / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS, "。"]) + "\n", encoding="utf-8")
    return path


def build(directory: Path, docs: list[list[int]], seed: int = 0) -> TokenizedCorpus:
    """A corpus whose documents have sentences of the given token counts (one character = one token)."""
    rng = random.Random(seed)
    text = "\n\n".join("\n".join("".join(rng.choice(CHARS) for _ in range(n)) for n in doc) for doc in docs)
    (directory / "corpus.txt").write_text(text + "\n", encoding="utf-8")
    tokenizer = Tokenizer.from_file(vocab_file(directory))
    return prepare_corpus([directory / "corpus.txt"], tokenizer, directory / "tok")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> TokenizedCorpus:
    rng = random.Random(1)
    docs = [[rng.randint(1, 40) for _ in range(rng.choice([1, 2, 3, 8, 20, 40]))] for _ in range(150)]
    return build(tmp_path_factory.mktemp("corpus"), docs)


def doc_of(corpus: TokenizedCorpus, start: int, stop: int) -> int:
    d = corpus.document_of_token(start)
    assert corpus.document_of_token(stop - 1) == d  # a segment never leaves its document
    return d


def sentence_starts(corpus: TokenizedCorpus) -> set[int]:
    return set(corpus.sentence_offsets.tolist())


@pytest.mark.parametrize("objective", ["sop", "nsp", "mlm"])
@pytest.mark.parametrize("max_seq_length,short_seq_prob", [(7, 0.1), (32, 0.1), (64, 1.0), (2048, 0.0)])
def test_shapes_and_lengths(corpus: TokenizedCorpus, objective: str, max_seq_length: int,
                            short_seq_prob: float) -> None:
    sampler = InstanceSampler(corpus, objective=objective, max_seq_length=max_seq_length,  # type: ignore[arg-type]
                              short_seq_prob=short_seq_prob, seed=7)
    instances = list(sampler.epoch(0))
    assert [inst.index for inst in instances] == list(range(len(instances)))
    assert sampler.count(0) == len(instances)
    for inst in instances:
        assert inst.num_tokens <= max_seq_length
        assert inst.a_stop > inst.a_start
        doc_of(corpus, inst.a_start, inst.a_stop)
        if objective == "mlm":
            assert inst.b_start == inst.b_stop and inst.label == NO_LABEL
        else:
            assert inst.b_stop > inst.b_start and inst.label in (IN_ORDER, NOT_IN_ORDER)
            doc_of(corpus, inst.b_start, inst.b_stop)
    if max_seq_length == 2048 and objective == "mlm":  # longer than any document: one whole document each
        assert len(instances) == corpus.num_documents
        assert sorted((i.a_start, i.a_stop) for i in instances) == [
            corpus.document_token_range(d) for d in range(corpus.num_documents)]


def test_sop_negatives_are_swapped_positives(corpus: TokenizedCorpus) -> None:
    sampler = InstanceSampler(corpus, objective="sop", max_seq_length=64, seed=3)
    swapped = in_order = random_doc = 0
    for epoch in range(4):
        for inst in sampler.epoch(epoch):
            same = doc_of(corpus, inst.a_start, inst.a_stop) == doc_of(corpus, inst.b_start, inst.b_stop)
            untruncated = inst.num_tokens < 64  # truncation leaves exactly max_num_tokens
            if not same:  # a one-sentence chunk: B from another document, label 1
                assert inst.label == NOT_IN_ORDER
                random_doc += 1
            elif inst.label == IN_ORDER:
                assert inst.a_stop <= inst.b_start
                assert inst.a_stop == inst.b_start or not untruncated
                in_order += 1
            else:  # B is the text before A: the positive's segments, swapped
                assert inst.b_stop <= inst.a_start
                assert inst.b_stop == inst.a_start or not untruncated
                swapped += 1
    assert random_doc > 0
    n = swapped + in_order
    assert abs(swapped / n - 0.5) < 4 * 0.5 / n ** 0.5  # a fair coin, within 4 sigma


def test_nsp_negatives_come_from_other_documents_and_put_back(tmp_path: Path) -> None:
    # Documents far shorter than max_seq_length: a chunk runs to the end of its document, nothing is truncated.
    rng = random.Random(2)
    corpus = build(tmp_path, [[rng.randint(1, 30) for _ in range(rng.randint(1, 8))] for _ in range(120)])
    sampler = InstanceSampler(corpus, objective="nsp", max_seq_length=1024, short_seq_prob=0.0, seed=5)
    starts = sentence_starts(corpus)
    used = np.zeros(corpus.num_tokens, int)
    multi_random = multi = 0
    for inst in sampler.epoch(0):
        doc_a = doc_of(corpus, inst.a_start, inst.a_stop)
        doc_b = doc_of(corpus, inst.b_start, inst.b_stop)
        used[inst.a_start:inst.a_stop] += 1
        if inst.label == IN_ORDER:
            assert doc_a == doc_b and inst.a_stop == inst.b_start
            used[inst.b_start:inst.b_stop] += 1
        else:
            assert doc_a != doc_b
            assert inst.b_start in starts  # B starts at a random sentence of the other document
        if inst.a_stop < corpus.document_token_range(doc_a)[1]:  # A ends before the chunk: >= 2 sentences
            multi += 1
            multi_random += inst.label == NOT_IN_ORDER
    # Unused segments go back: every token of every document is in exactly one A or in-order B.
    assert (used == 1).all()
    assert abs(multi_random / multi - 0.5) < 4 * 0.5 / multi ** 0.5


def test_one_sentence_chunks_take_b_from_another_document(tmp_path: Path) -> None:
    # Every sentence is longer than max_num_tokens, so every chunk is one sentence.
    corpus = build(tmp_path, [[40, 35, 50], [45], [60, 41], [38], [55, 44, 39]])
    for objective in ("sop", "nsp"):
        sampler = InstanceSampler(corpus, objective=objective, max_seq_length=32, short_seq_prob=0.0)  # type: ignore[arg-type]
        for epoch in range(5):
            instances = list(sampler.epoch(epoch))
            assert len(instances) == corpus.num_sentences  # nothing to put back: one chunk per sentence
            for inst in instances:
                assert inst.label == NOT_IN_ORDER
                assert doc_of(corpus, inst.a_start, inst.a_stop) != doc_of(corpus, inst.b_start, inst.b_stop)
                assert inst.num_tokens == 32  # both long: truncated to max_seq_length exactly


def test_single_document_corpus_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    corpus = build(tmp_path, [[5, 6, 7, 8]])
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        sampler = InstanceSampler(corpus, objective="sop")
    assert "single document" in caplog.text
    assert all(inst.label in (0, 1) for inst in sampler.epoch(0))
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        InstanceSampler(corpus, objective="mlm")
    assert not caplog.text


def test_deterministic_per_seed_and_epoch_and_resumable(corpus: TokenizedCorpus) -> None:
    def run(seed: int, epoch: int, **kw: int) -> list[Instance]:
        return list(InstanceSampler(corpus, objective="sop", seed=seed, max_seq_length=48, **kw).epoch(epoch))

    first = run(11, 2)
    assert run(11, 2) == first
    assert run(11, 3) != first and run(12, 2) != first
    # Small windows: many shuffle windows, same kind of result, still deterministic.
    small = run(11, 2, window_tokens=64)
    assert small == run(11, 2, window_tokens=64) and len(small) > 0
    # Resuming at any index yields exactly the tail, with or without counts cached.
    for start in (0, 1, 137, len(first) - 1, len(first), len(first) + 5):
        fresh = InstanceSampler(corpus, objective="sop", seed=11, max_seq_length=48)
        assert list(fresh.epoch(2, start=start)) == first[start:]
        assert fresh.count(2) == len(first)
        assert list(fresh.epoch(2, start=start)) == first[start:]  # now skipping windows by cached counts
    # Processes take their share by index and together see everything once.
    shares = [list(InstanceSampler(corpus, objective="sop", seed=11, max_seq_length=48).epoch(2))[r::3]
              for r in range(3)]
    assert sorted(i.index for share in shares for i in share) == list(range(len(first)))
    # Consecutive instances mostly come from different documents (the window shuffle).
    docs = [corpus.document_of_token(i.a_start) for i in first]
    assert sum(a == b for a, b in zip(docs, docs[1:])) < 0.2 * len(docs)


def test_short_seq_prob_shortens(corpus: TokenizedCorpus) -> None:
    def mean_length(p: float) -> float:
        sampler = InstanceSampler(corpus, objective="nsp", max_seq_length=128, short_seq_prob=p)
        return float(np.mean([inst.num_tokens for inst in sampler.epoch(0)]))

    assert mean_length(1.0) < 0.8 * mean_length(0.0)


def test_truncation_counts_follow_upstream() -> None:
    rng = random.Random(0)

    def upstream_sides(la: int, lb: int, max_num: int) -> tuple[int, int]:
        from_a = from_b = 0
        while la + lb > max_num:
            if la > lb:
                la, from_a = la - 1, from_a + 1
            else:
                lb, from_b = lb - 1, from_b + 1
        return from_a, from_b

    fronts = removed = 0
    for _ in range(3000):
        la, lb, max_num = rng.randint(1, 300), rng.randint(0, 300), rng.randint(2, 300)
        af, ab, bf, bb = _truncation(la, lb, max_num, rng)
        assert (af + ab, bf + bb) == upstream_sides(la, lb, max_num)
        assert min(af, ab, bf, bb) >= 0 and la - af - ab >= 1
        fronts += af + bf
        removed += af + ab + bf + bb
    assert abs(fronts / removed - 0.5) < 0.01  # front or back by a fair coin


def test_bad_options(corpus: TokenizedCorpus) -> None:
    with pytest.raises(UsageError, match="objective"):
        InstanceSampler(corpus, objective="sbo")  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="too short"):
        InstanceSampler(corpus, objective="sop", max_seq_length=4)
    InstanceSampler(corpus, objective="mlm", max_seq_length=4)
    with pytest.raises(UsageError, match="short_seq_prob"):
        InstanceSampler(corpus, short_seq_prob=1.5)
    with pytest.raises(UsageError, match="seed"):
        InstanceSampler(corpus, seed=-1)
