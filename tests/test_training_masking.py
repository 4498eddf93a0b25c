"""zoo.training.masking: model inputs, upstream 80/10/10 masking, ALBERT n-grams, whole words."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import UsageError
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import TokenizedCorpus, prepare_corpus
from zoo.training.instances import NO_LABEL, InstanceSampler
from zoo.training.masking import IGNORE_INDEX, ExampleBuilder, MaskingConfig, select_mask_spans

WORDS = ["今天", "天气", "很好", "我们", "一起", "学习", "中文", "自然", "语言", "处理", "北京", "大学", "研究",
         "模型", "训练", "数据", "时间", "朋友", "电脑", "手机", "喜欢", "工作", "问题", "方法", "世界", "人民",
         "的", "了", "是", "在"]
PIECES = ["play", "##ing", "##ed", "##er", "##s", "the", "game", "work", "read"]
ENGLISH = ["playing", "played", "player", "plays", "the", "games", "working", "reader", "reads"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    chars = sorted(set("".join(WORDS)) | set("，。"))
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *PIECES]) + "\n",
                    encoding="utf-8")
    return Tokenizer.from_file(path)


def write_text(path: Path, english: bool, seed: int = 0) -> None:
    rng = random.Random(seed)
    vocabulary = WORDS + ENGLISH if english else WORDS

    def line() -> str:
        return " ".join(rng.choice(vocabulary) for _ in range(rng.randint(3, 25)))

    docs = ["\n".join(line() for _ in range(rng.randint(1, 10))) for _ in range(80)]
    path.write_text("\n\n".join(docs) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory, tokenizer: Tokenizer) -> TokenizedCorpus:
    directory = tmp_path_factory.mktemp("corpus")
    write_text(directory / "c.txt", english=True)
    return prepare_corpus([directory / "c.txt"], tokenizer, directory / "tok")


def examples(corpus: TokenizedCorpus, builder: ExampleBuilder, objective: str = "sop", epochs: int = 1,
             max_seq_length: int = 64):
    sampler = InstanceSampler(corpus, objective=objective, max_seq_length=max_seq_length, seed=1)  # type: ignore[arg-type]
    for epoch in range(epochs):
        for inst in sampler.epoch(epoch):
            yield inst, builder.build(corpus, inst, epoch)


def test_layout_of_a_pair_and_a_single_segment(tokenizer: Tokenizer) -> None:
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.albert(max_seq_length=16), seed=3)
    a, b = [10, 11, 12, 13], [20, 21, 22]
    ex = builder.build_from_ids(a, [True] * 4, b, [True] * 3, 1, epoch=0, index=5)
    assert set(ex.as_dict()) == {"input_ids", "token_type_ids", "attention_mask", "labels",
                                 "seq_relationship_label"}
    assert all(v.dtype == np.int64 for v in ex.as_dict().values())
    assert ex.input_ids.shape == ex.labels.shape == (16,) and ex.seq_relationship_label.shape == ()
    original = np.array([tokenizer.cls_token_id, *a, tokenizer.sep_token_id, *b, tokenizer.sep_token_id]
                        + [tokenizer.pad_token_id] * 6)
    predicted = ex.labels != IGNORE_INDEX
    assert 1 <= predicted.sum() <= 2  # round(10 * 0.15) = 2 (halves go to even)
    assert (ex.labels[predicted] == original[predicted]).all()
    assert (ex.input_ids[~predicted] == original[~predicted]).all()
    assert ex.token_type_ids.tolist() == [0] * 6 + [1] * 4 + [0] * 6
    assert ex.attention_mask.tolist() == [1] * 10 + [0] * 6
    assert int(ex.seq_relationship_label) == 1
    single = builder.build_from_ids(a, [True] * 4, [], [], NO_LABEL, epoch=0, index=5)
    assert single.input_ids[0] == tokenizer.cls_token_id and single.input_ids[5] == tokenizer.sep_token_id
    assert (single.input_ids[6:] == tokenizer.pad_token_id).all() and (single.labels[5:] == IGNORE_INDEX).all()
    assert single.token_type_ids.tolist() == [0] * 16 and single.attention_mask.tolist() == [1] * 6 + [0] * 10
    assert int(single.seq_relationship_label) == -100
    with pytest.raises(UsageError, match="max_seq_length"):
        builder.build_from_ids(list(range(10, 25)), [True] * 15, [], [], NO_LABEL, epoch=0, index=0)
    # Segments cut at the front (starting with a "##" piece) still start a word; no word runs across [SEP].
    for index in range(20):
        cut = builder.build_from_ids([10], [False], [20], [False], 0, epoch=0, index=index)
        assert (cut.labels != IGNORE_INDEX).sum() == 1  # budget 1: two one-token words, not one of two tokens


@pytest.mark.parametrize("config", [MaskingConfig.albert(64), MaskingConfig.bert(64),
                                    MaskingConfig.albert(64, masked_lm_prob=0.6, max_predictions_per_seq=7)],
                         ids=["albert", "bert", "budget"])
def test_budget_and_special_tokens(corpus: TokenizedCorpus, tokenizer: Tokenizer, config: MaskingConfig) -> None:
    builder = ExampleBuilder.from_tokenizer(tokenizer, config)
    exact = total = 0
    for inst, ex in examples(corpus, builder):
        total += 1
        n = int(ex.attention_mask.sum())
        assert n == inst.num_tokens
        predicted = ex.labels != IGNORE_INDEX
        budget = min(config.max_predictions_per_seq, max(1, int(round(n * config.masked_lm_prob))))
        assert 1 <= predicted.sum() <= budget
        exact += predicted.sum() == budget
        specials = np.zeros(64, bool)
        specials[[0, 1 + inst.a_stop - inst.a_start, n - 1]] = True  # [CLS], [SEP], [SEP] (or [CLS] A [SEP])
        specials[n:] = True
        assert not (predicted & specials).any()
        assert (ex.labels[predicted] != tokenizer.sep_token_id).all()
        assert (ex.labels[predicted] != tokenizer.cls_token_id).all()
    if config.ngram == 1 and not config.whole_word:
        assert exact == total  # single tokens always fill the budget exactly


def test_80_10_10(corpus: TokenizedCorpus, tokenizer: Tokenizer) -> None:
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.albert(64))
    masked = kept = randomised = 0
    replacements: list[int] = []
    for _, ex in examples(corpus, builder, epochs=6):
        predicted = ex.labels != IGNORE_INDEX
        got, want = ex.input_ids[predicted], ex.labels[predicted]
        is_mask = got == tokenizer.mask_token_id
        masked += is_mask.sum()
        kept += (got == want).sum()
        other = ~is_mask & (got != want)
        randomised += other.sum()
        replacements += got[other].tolist()
    total = masked + kept + randomised
    assert total > 8_000
    vocab = tokenizer.vocab_size
    for count, p in ((masked, 0.8), (kept, 0.1 + 0.1 / vocab), (randomised, 0.1 - 0.1 / vocab)):
        assert abs(count / total - p) < 5 * (p * (1 - p) / total) ** 0.5, (count / total, p)
    # random replacements are spread over the whole vocabulary
    assert len(set(replacements)) > 0.9 * vocab and max(replacements) < vocab


def test_ngram_lengths_favour_short_spans() -> None:
    rng = np.random.default_rng(0)
    for favor, want in ((True, [6 / 11, 3 / 11, 2 / 11]), (False, [2 / 11, 3 / 11, 6 / 11])):
        counts = np.zeros(3)
        for _ in range(6000):
            spans = select_mask_spans([1] * 40, 20, rng, ngram=3, favor_shorter_ngram=favor)
            lo, hi = spans[0]  # the first span never falls back to a shorter one or overlaps
            if lo < 38:  # nor is it cut by the end of the sequence
                counts[hi - lo - 1] += 1
        freq = counts / counts.sum()
        assert np.all(np.abs(freq - want) < 5 * np.sqrt(np.array(want) * (1 - np.array(want)) / counts.sum()))
    # Over whole masks: spans are whole words, never overlap, never exceed the budget.
    sizes = [1, 2, 1, 3, 1, 1, 2, 1, 1, 4] * 5
    bounds = np.cumsum([0, *sizes])
    for _ in range(500):
        spans = select_mask_spans(sizes, 15, rng)
        tokens = [t for lo, hi in spans for t in range(bounds[lo], bounds[hi])]
        assert len(tokens) == len(set(tokens)) <= 15
        assert all(1 <= hi - lo <= 3 for lo, hi in spans)


def coverage(labels: np.ndarray, positions: np.ndarray, words: np.ndarray) -> tuple[int, int]:
    """(multi-token words predicted entirely, words predicted only in part) of one segment."""
    predicted = labels[positions] != IGNORE_INDEX
    whole = split = 0
    for w in np.unique(words):
        part = predicted[words == w]
        whole += len(part) > 1 and bool(part.all())
        split += bool(part.any()) and not part.all()
    return whole, split


def segment_coverage(inst, labels: np.ndarray, words: np.ndarray) -> tuple[int, int]:
    """:func:`coverage` over A and B; ``words`` gives a word id per corpus token."""
    la = inst.a_stop - inst.a_start
    whole = split = 0
    for start, stop, first in ((inst.a_start, inst.a_stop, 1), (inst.b_start, inst.b_stop, la + 2)):
        w, s = coverage(labels, np.arange(first, first + stop - start), words[start:stop])
        whole, split = whole + w, split + s
    return whole, split


def test_whole_words_and_ngrams_in_examples(corpus: TokenizedCorpus, tokenizer: Tokenizer) -> None:
    words = np.cumsum(corpus.word_starts)  # a word id per token: "play ##ing" share one
    for config in (MaskingConfig.albert(64), MaskingConfig.bert(64, whole_word=True)):
        builder = ExampleBuilder.from_tokenizer(tokenizer, config)
        whole = 0
        for inst, ex in examples(corpus, builder):
            w, split = segment_coverage(inst, ex.labels, words)
            assert split == 0
            whole += w
        assert whole > 50  # multi-piece words really were masked
    # Without whole words, BERT masks single pieces: some words get split.
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.bert(64))
    assert sum(segment_coverage(inst, ex.labels, words)[1] for inst, ex in examples(corpus, builder)) > 50


def test_whole_jieba_words(tmp_path: Path, tokenizer: Tokenizer) -> None:
    jieba = pytest.importorskip("jieba")
    rng = random.Random(5)
    lines = ["".join(rng.choice(WORDS) for _ in range(rng.randint(2, 12))) for _ in range(300)]
    text = "\n".join(line + ("\n" if i % 7 == 6 else "") for i, line in enumerate(lines))
    (tmp_path / "c.txt").write_text(text + "\n", encoding="utf-8")
    corpus = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "tok", words="jieba")
    # Independently: the jieba word of every token (Chinese only: one character, one token).
    segmenter = jieba.Tokenizer()
    words = np.concatenate([np.repeat(np.arange(len(ws)) + 1000 * i, [len(w) for w in ws])
                            for i, ws in enumerate([list(segmenter.cut(line)) for line in lines])])
    assert len(words) == corpus.num_tokens
    for config in (MaskingConfig.bert(64, whole_word=True), MaskingConfig.albert(64)):
        builder = ExampleBuilder.from_tokenizer(tokenizer, config)
        whole = 0
        for inst, ex in examples(corpus, builder, objective="nsp"):
            w, split = segment_coverage(inst, ex.labels, words)
            assert split == 0
            whole += w
        assert whole > 100
    # The same text without jieba: characters are masked apart, splitting words.
    plain = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "plain")
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.bert(64, whole_word=True))
    assert sum(segment_coverage(inst, ex.labels, words)[1] for inst, ex in examples(plain, builder)) > 50


def test_masks_depend_on_seed_epoch_and_index_only(corpus: TokenizedCorpus, tokenizer: Tokenizer) -> None:
    config = MaskingConfig.albert(64)
    sampler = InstanceSampler(corpus, objective="sop", max_seq_length=64, seed=4)
    instances = list(sampler.epoch(0))[:200]
    one = ExampleBuilder.from_tokenizer(tokenizer, config, seed=9)
    two = ExampleBuilder.from_tokenizer(tokenizer, config, seed=9)
    changed_epoch = changed_seed = 0
    for inst in reversed(instances):  # order of building does not matter
        ex = one.build(corpus, inst, 0)
        again = two.build(corpus, inst, 0)
        for key, value in ex.as_dict().items():
            assert np.array_equal(value, again.as_dict()[key]), key
        changed_epoch += not np.array_equal(ex.labels, one.build(corpus, inst, 1).labels)
        other_seed = ExampleBuilder.from_tokenizer(tokenizer, config, seed=10).build(corpus, inst, 0)
        changed_seed += not np.array_equal(ex.labels, other_seed.labels)
    assert changed_epoch > 0.8 * len(instances) and changed_seed > 0.8 * len(instances)


def test_bad_config() -> None:
    with pytest.raises(UsageError, match="masked_lm_prob"):
        MaskingConfig(masked_lm_prob=1.5)
    with pytest.raises(UsageError, match="ngram"):
        MaskingConfig(ngram=0)
    assert MaskingConfig.bert().ngram == 1 and not MaskingConfig.bert().whole_word
    assert MaskingConfig.albert().ngram == 3 and MaskingConfig.albert().whole_word
    assert MaskingConfig().num_to_predict(128) == 19 and MaskingConfig().num_to_predict(500) == 20
    assert MaskingConfig(masked_lm_prob=0.0).num_to_predict(128) == 0
