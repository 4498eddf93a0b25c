"""zoo.tagging: tag schemes, the one decoder (against seqeval's get_entities), units ↔ WordPiece tokens, windows.

The tokenizer is zoo's, over a small vocab built here: some characters, a digit run and Latin words as whole
pieces, ``##`` pieces, and characters left out so that [UNK] happens.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from zoo.config import IGNORE_INDEX
from zoo.errors import UsageError
from zoo.tagging import (
    Span,
    TagError,
    TagSet,
    align,
    align_batch,
    char_units,
    decode_tags,
    detect_scheme,
    encode_tagged,
    parse_tag,
    predict_spans,
    spans_to_tags,
    tags_to_spans,
    unit_spans,
    unit_tags,
    window_ranges,
)
from zoo.tokenizer import Tokenizer

CHARS = "张三李四王五在北京大学吃宫保鸡丁今天很好去了买的和是"
PIECES = ["2019", "12", "##3", "iphone", "play", "##ing", "new", "york", "pro", "##s"]


@pytest.fixture(scope="module")
def tok(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS, *PIECES]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return Tokenizer.from_file(path)


def pieces(tok: Tokenizer, alignment) -> list[str]:
    return tok.convert_ids_to_tokens(alignment.input_ids)


# ------------------------------------------------------------------------------------------------- tags
def test_parse_tag_accepts_the_schemes_prefixes_and_an_underscore() -> None:
    assert parse_tag("O") == ("O", "")
    assert parse_tag("B-PER") == ("B", "PER")
    assert parse_tag("M-ORG") == ("M", "ORG")
    assert parse_tag("B_PER") == ("B", "PER")
    assert parse_tag("I-PER-NOM") == ("I", "PER-NOM")
    for bad in ["", "B-", "B", "X-PER", "b-per", "o", "BPER", "O-PER", " B-PER"]:
        with pytest.raises(TagError):
            parse_tag(bad)


def _seqeval_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    from seqeval.metrics.sequence_labeling import get_entities

    return [(label, start, end + 1) for label, start, end in get_entities(tags)]


@pytest.mark.parametrize("prefixes", ["BI", "BIES"], ids=["bio", "bioes"])
def test_decode_tags_is_seqeval_get_entities_on_random_sequences(prefixes: str) -> None:
    rng = random.Random(19)
    tagset = ["O", *(f"{p}-{label}" for p in prefixes for label in ("PER", "LOC", "A-B"))]
    for _ in range(4000):
        tags = [rng.choice(tagset) for _ in range(rng.randrange(0, 14))]
        ours = [(s.label, s.start, s.end) for s in decode_tags(tags)]
        assert ours == _seqeval_spans(tags), tags


def test_decode_tags_reads_ill_formed_sequences_as_conlleval() -> None:
    assert decode_tags(["I-X", "I-X", "O", "I-X"]) == [Span(0, 2, "X"), Span(3, 4, "X")]
    assert decode_tags(["B-X", "I-Y", "I-Y"]) == [Span(0, 1, "X"), Span(1, 3, "Y")]
    assert decode_tags(["B-X", "E-X", "E-X"]) == [Span(0, 2, "X"), Span(2, 3, "X")]
    assert decode_tags(["S-X", "I-X", "B-X"]) == [Span(0, 1, "X"), Span(1, 2, "X"), Span(2, 3, "X")]
    assert decode_tags([]) == []


SENTENCE = list("张三在北京大学吃宫保鸡丁李四王五")
SPANS = [Span(0, 2, "PER"), Span(3, 7, "ORG"), Span(7, 8, "X"), Span(8, 12, "DISH"), Span(12, 14, "PER"),
         Span(14, 16, "PER")]
WRITTEN = {
    "bio": "B-PER I-PER O B-ORG I-ORG I-ORG I-ORG B-X B-DISH I-DISH I-DISH I-DISH B-PER I-PER B-PER I-PER",
    "iob1": "I-PER I-PER O I-ORG I-ORG I-ORG I-ORG I-X I-DISH I-DISH I-DISH I-DISH I-PER I-PER B-PER I-PER",
    "bioes": "B-PER E-PER O B-ORG I-ORG I-ORG E-ORG S-X B-DISH I-DISH I-DISH E-DISH B-PER E-PER B-PER E-PER",
    "bmes": "B_PER E_PER O B_ORG M_ORG M_ORG E_ORG S_X B_DISH M_DISH M_DISH E_DISH B_PER E_PER B_PER E_PER",
}


@pytest.mark.parametrize("scheme", list(WRITTEN))
def test_every_scheme_reads_to_the_same_spans(scheme: str) -> None:
    tags = WRITTEN[scheme].split()
    assert len(tags) == len(SENTENCE)
    assert detect_scheme([tags, ["O", "O"]]) == scheme
    assert tags_to_spans(tags, scheme) == SPANS


def test_io_reads_runs_as_entities() -> None:
    tags = ["I-PER", "I-PER", "O", "I-ORG", "I-ORG", "I-LOC", "O"]
    assert detect_scheme([tags]) == "io"
    assert tags_to_spans(tags, "io") == [Span(0, 2, "PER"), Span(3, 5, "ORG"), Span(5, 6, "LOC")]
    assert detect_scheme([["O", "O"]]) == "bio"  # nothing to tell: the default


def test_a_tag_from_another_scheme_is_an_error_with_its_position() -> None:
    with pytest.raises(TagError, match="another scheme") as info:
        tags_to_spans(["B-X", "E-X", "O"], "bio")
    assert info.value.index == 1
    with pytest.raises(TagError, match="another scheme") as info:
        tags_to_spans(["I-X", "B-X"], "io")
    assert info.value.index == 1
    with pytest.raises(TagError, match="another scheme"):
        tags_to_spans(["M-X"], "iob1")
    with pytest.raises(TagError, match="not a tag") as info:
        tags_to_spans(["O", "O", "B-"], "bio")
    assert info.value.index == 2
    with pytest.raises(TagError) as info:
        detect_scheme([["O"], ["O", "PER"]])
    assert (info.value.sequence, info.value.index) == (1, 1)


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_spans_to_tags_and_back(scheme: str) -> None:
    rng = random.Random(7)
    for _ in range(500):
        length, spans, at = rng.randrange(0, 20), [], 0
        while at < length:
            at += rng.randrange(0, 4)
            end = min(length, at + rng.randrange(1, 4))
            if at < end:
                spans.append(Span(at, end, rng.choice(["A", "B"])))
            at = end
        tags = spans_to_tags(spans, length, scheme)
        assert decode_tags(tags) == spans
        assert _seqeval_spans(tags) == [(s.label, s.start, s.end) for s in spans]
    assert spans_to_tags([Span(1, 2, "X"), Span(2, 5, "Y")], 6, "bioes") == ["O", "S-X", "B-Y", "I-Y", "E-Y", "O"]
    with pytest.raises(ValueError, match="overlaps"):
        spans_to_tags([Span(0, 2, "X"), Span(1, 3, "Y")], 4)
    with pytest.raises(ValueError, match="outside"):
        spans_to_tags([Span(2, 5, "X")], 4)


def test_tagset_ids_and_round_trip() -> None:
    bio = TagSet(["PER", "LOC"])
    assert bio.tags == ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    bioes = TagSet(["PER"], "bioes")
    assert bioes.tags == ("O", "B-PER", "I-PER", "E-PER", "S-PER")
    assert TagSet.from_tags(bio.tags).tags == bio.tags
    assert TagSet.from_tags(list(bioes.tags)).scheme == "bioes"
    # a head trained elsewhere may order its tags its own way: the order is kept, the set must be complete
    assert TagSet.from_tags(["O", "I-PER", "B-PER"]).ids == {"O": 0, "I-PER": 1, "B-PER": 2}
    with pytest.raises(ValueError):
        TagSet.from_tags(["O", "B-PER"])
    assert bio.unit_ids([Span(1, 3, "LOC")], char_units("abcd")) == [0, 3, 4, 0]
    with pytest.raises(ValueError, match="ORG"):
        bio.unit_ids([Span(0, 1, "ORG")], char_units("ab"))
    with pytest.raises(UsageError):
        TagSet(["A", "A"])
    with pytest.raises(UsageError):
        TagSet(["A"], "iob1")  # not an internal scheme


def test_unit_spans_need_unit_boundaries() -> None:
    units = [(0, 4), (5, 7), (8, 12)]
    assert unit_spans([Span(5, 12, "X")], units) == [Span(1, 3, "X")]
    assert unit_tags([Span(0, 7, "X")], units) == ["B-X", "I-X", "O"]
    for bad in [Span(1, 4, "X"), Span(0, 5, "X"), Span(4, 7, "X")]:
        with pytest.raises(ValueError, match="boundaries"):
            unit_spans([bad], units)


# ---------------------------------------------------------------------------------------------- alignment
def test_alignment_with_spaces_control_characters_digit_and_latin_runs_and_unk(tok: Tokenizer) -> None:
    text = "买\x002019 iPhone3 公司"  # NUL: removed by the normalizer; 公司: not in the vocab
    a = align(tok, text)
    assert pieces(tok, a) == ["买", "2019", "iphone", "##3", "[UNK]", "[UNK]"]
    assert a.offsets == [(0, 1), (2, 6), (7, 13), (13, 14), (15, 16), (16, 17)]
    assert a.token_unit == [0, 2, 7, 13, 15, 16]  # "2019" is labelled by "2", "iphone" by "i"
    assert a.heads == [0, 1, 2, 3, 4, 5]
    assert a.unit_tokens[1] == [] and a.unit_tokens[6] == [] and a.unit_tokens[14] == []  # NUL, space, space
    assert a.unit_tokens[3] == [1] and a.unit_tokens[12] == [2] and a.unit_tokens[13] == [3]
    assert len(a.units) == len(text)


def test_word_units_label_only_their_first_piece(tok: Tokenizer) -> None:
    text = "playing new pros"
    a = align(tok, text, [(0, 7), (8, 11), (12, 16)])
    assert pieces(tok, a) == ["play", "##ing", "new", "pro", "##s"]
    assert a.token_unit == [0, -1, 1, 2, -1]
    assert a.unit_tokens == [[0, 1], [2], [3, 4]]
    tagset = TagSet(["X"])
    [window] = encode_tagged(tok, a, tagset.unit_ids([Span(0, 11, "X")], a.units), max_seq_length=16, stride=2)
    assert window.input_ids.tolist() == [tok.cls_token_id, *a.input_ids, tok.sep_token_id]
    assert window.labels.tolist() == [IGNORE_INDEX, 1, IGNORE_INDEX, 2, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert window.attention_mask.tolist() == [1] * 7 and window.token_type_ids.tolist() == [0] * 7
    assert window.input_ids.dtype == np.int64 and window.labels.dtype == np.int64


def test_training_labels_of_characters_go_to_the_first_token_that_covers_them(tok: Tokenizer) -> None:
    text = "买iphone3的"
    a = align(tok, text)
    tagset = TagSet(["P"])
    ids = tagset.unit_ids([Span(1, 8, "P")], a.units)
    [window] = encode_tagged(tok, a, ids, max_seq_length=32, stride=0)
    # tokens: 买 iphone ##3 的 — "iphone" carries B-P (its first unit), "##3" starts the unit "3": I-P
    assert window.labels.tolist() == [IGNORE_INDEX, 0, 1, 2, 0, IGNORE_INDEX]


def _perfect(a, windows, tagset: TagSet, spans: list[Span]) -> list[np.ndarray]:
    """One-hot logits of the gold tags at each window's tokens (what a perfect model outputs)."""
    unit_ids = tagset.unit_ids(spans, a.units)
    token_ids = [unit_ids[u] if u >= 0 else 0 for u in a.token_unit]
    outputs = []
    for w in windows:
        logits = np.full((w.end - w.start + 4, len(tagset)), -5.0)  # 2 rows of padding after [SEP]
        for i, tag in enumerate(token_ids[w.start:w.end]):
            logits[i + 1, tag] = 5.0
        outputs.append(logits)
    return outputs


def test_predictions_map_back_to_every_character(tok: Tokenizer) -> None:
    tagset = TagSet(["P", "D"])
    text = "买 iphone3 的宫保 鸡丁 好"
    a = align(tok, text)
    windows = encode_tagged(tok, a, max_seq_length=64, stride=0)
    ids = {t: i for i, t in enumerate(tagset.tags)}
    # tokens: 买 iphone ##3 的 宫 保 鸡 丁 好 ; predict iphone=B-P, ##3=I-P, 宫=B-D 保 鸡 丁=I-D
    token_tags = ["O", "B-P", "I-P", "O", "B-D", "I-D", "I-D", "I-D", "O"]
    [logits] = [np.zeros((len(windows[0].input_ids), len(tagset)))]
    for i, tag in enumerate(token_tags):
        logits[i + 1, ids[tag]] = 4.0
    spans = predict_spans(a, windows, [logits], tagset)
    # the Latin run carries the entity over all its characters; the space inside 宫保 鸡丁 is inside the
    # entity, the spaces at its edges are not
    assert spans == [Span(2, 9, "P"), Span(11, 16, "D")]
    assert text[2:9] == "iphone3" and text[11:16] == "宫保 鸡丁"
    p = np.exp(4.0) / (np.exp(4.0) + len(tagset) - 1)
    assert spans[0].score == pytest.approx(p, rel=1e-9)
    assert unit_tags(spans, a.units)[9:17] == ["O", "O", "B-D", "I-D", "I-D", "I-D", "I-D", "O"]
    # ids instead of logits: same spans, no score
    by_id = predict_spans(a, windows, [logits.argmax(-1)], tagset)
    assert by_id == spans and by_id[0].score is None


def test_a_b_inside_a_merged_token_continues_over_its_units_and_unk_characters_get_tags(tok: Tokenizer) -> None:
    tagset = TagSet(["N"])
    text = "公司2019年"  # 公 司 年 are [UNK]; 2019 one piece
    a = align(tok, text)
    assert pieces(tok, a) == ["[UNK]", "[UNK]", "2019", "[UNK]"]
    windows = encode_tagged(tok, a, max_seq_length=16, stride=0)
    out = np.array([0, 1, 2, 0, 1, 0])  # [CLS] B-N I-N O B-N [SEP]
    assert predict_spans(a, windows, [out], tagset) == [Span(0, 2, "N"), Span(6, 7, "N")]
    out = np.array([0, 0, 0, 1, 0, 0])
    assert predict_spans(a, windows, [out], tagset) == [Span(2, 6, "N")]


def test_units_a_piece_reaches_into_continue_its_entity(tok: Tokenizer) -> None:
    # units that do not follow the pieces: "##ing" starts inside unit 0 and reaches into unit 1, whose only
    # token it is; unit 1 has no labelled token and goes with the entity of the token before
    a = align(tok, "playing", [(0, 5), (5, 7)])
    assert pieces(tok, a) == ["play", "##ing"]
    assert a.token_unit == [0, -1]
    assert a.unit_tokens == [[0, 1], [1]]
    windows = encode_tagged(tok, a, max_seq_length=8, stride=0)
    assert predict_spans(a, windows, [np.array([0, 1, 0, 0])], TagSet(["X"])) == [Span(0, 7, "X")]


def test_a_text_the_tokenizer_drops_entirely_predicts_nothing(tok: Tokenizer) -> None:
    a = align(tok, " \x00 ")
    assert a.input_ids == [] and a.heads == []
    windows = encode_tagged(tok, a, max_seq_length=8, stride=2)
    assert [(w.start, w.end) for w in windows] == [(0, 0)]
    assert predict_spans(a, windows, [np.zeros((2, 3))], TagSet(["X"])) == []


def test_align_batch_equals_align_one_by_one(tok: Tokenizer) -> None:
    texts = ["张三在北京", "playing new", "2019年 iphone"]
    units = [None, [(0, 7), (8, 11)], None]
    assert align_batch(tok, texts, units) == [align(tok, t, u) for t, u in zip(texts, units)]


# ------------------------------------------------------------------------------------------------ windows
def _long_text() -> tuple[str, list[Span]]:
    rng = random.Random(3)
    text, spans = "", []
    for _ in range(60):
        kind = rng.randrange(4)
        if kind == 0:
            spans.append(Span(len(text), len(text) + 4, "D"))
            text += "宫保鸡丁"
        elif kind == 1:
            spans.append(Span(len(text), len(text) + 7, "P"))
            text += "iphone3和"  # two pieces; the CJK character keeps the next Latin run a word of its own
        elif kind == 2:
            text += " "
        else:
            text += rng.choice(["今天很好", "2019的", "的", "和"])
    return text, spans


@pytest.mark.parametrize(("max_seq_length", "stride"), [(10, 0), (10, 3), (16, 7), (33, 12), (512, 0)])
def test_windows_cover_every_token_and_recover_entities_across_edges(tok: Tokenizer, max_seq_length: int,
                                                                      stride: int) -> None:
    text, gold = _long_text()
    a = align(tok, text)
    tagset = TagSet(["D", "P"])
    windows = encode_tagged(tok, a, tagset.unit_ids(gold, a.units), max_seq_length=max_seq_length, stride=stride)
    assert windows[0].start == 0 and windows[-1].end == len(a.input_ids)
    for w, nxt in zip(windows, windows[1:]):
        assert len(w.input_ids) <= max_seq_length
        assert nxt.start <= w.end and nxt.start > w.start and nxt.end > w.end  # overlapping, moving on
        assert w.end - nxt.start >= min(stride, w.end - w.start - 1) or nxt.start == w.end
        assert not pieces(tok, a)[w.end].startswith("##")  # "iphone ##3" never split
    if len(windows) > 1:
        crossing = [s for s in gold if any(s.start < a.offsets[w.end][0] < s.end for w in windows[:-1])]
        assert crossing, "the fixture should put entities across window edges"
    spans = predict_spans(a, windows, _perfect(a, windows, tagset, gold), tagset)
    assert spans == gold
    assert all(s.score is not None and s.score > 0.99 for s in spans)


def test_each_token_takes_its_prediction_from_the_window_with_most_context(tok: Tokenizer) -> None:
    text = "今天很好" * 10
    a = align(tok, text)
    ranges = window_ranges(a, max_seq_length=12, stride=5)
    windows = encode_tagged(tok, a, max_seq_length=12, stride=5)
    assert [(w.start, w.end) for w in windows] == ranges
    assert len(ranges) > 3
    tagset = TagSet([f"W{k}" for k in range(len(ranges))])  # window k predicts B-Wk everywhere
    outputs = [np.full(len(w.input_ids), tagset.tags.index(f"B-W{k}")) for k, w in enumerate(windows)]
    spans = predict_spans(a, windows, outputs, tagset)
    assert [s.end - s.start for s in spans] == [1] * len(text)  # every character predicted exactly once
    for s in spans:
        t = s.start  # one character, one token
        best = max(range(len(ranges)), key=lambda k: (ranges[k][0] <= t < ranges[k][1],
                                                      min(t - ranges[k][0], ranges[k][1] - 1 - t)
                                                      + 0.01 * (ranges[k][1] - ranges[k][0]), -k))
        assert s.label == f"W{best}"


def test_a_unit_longer_than_a_window_is_split_rather_than_dropped(tok: Tokenizer) -> None:
    words = align(tok, " ".join(["playing"] * 3), [(0, 7), (8, 15), (16, 23)])  # play ##ing ×3
    # 3 tokens of room: a window ends before a word's ##ing, and the next starts at a word (whole words win
    # over the overlap of stride=1)
    assert window_ranges(words, max_seq_length=5, stride=1) == [(0, 2), (2, 4), (4, 6)]
    # 1 token of room: the word's pieces must part
    assert window_ranges(words, max_seq_length=3, stride=0) == [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 6)]
    tagset = TagSet(["X"])
    windows = encode_tagged(tok, words, tagset.unit_ids([Span(8, 15, "X")], words.units), max_seq_length=3,
                            stride=0)
    assert [w.labels.tolist()[1] for w in windows] == [0, IGNORE_INDEX, 1, IGNORE_INDEX, 0, IGNORE_INDEX]
    outputs = [np.array([0, 1 if w.start == 2 else 0, 0]) for w in windows]
    assert predict_spans(words, windows, outputs, tagset) == [Span(8, 15, "X")]


def test_window_arguments_are_checked(tok: Tokenizer) -> None:
    a = align(tok, "今天很好")
    with pytest.raises(UsageError, match="stride"):
        window_ranges(a, max_seq_length=8, stride=6)
    with pytest.raises(UsageError, match="max_seq_length"):
        window_ranges(a, max_seq_length=2, stride=0)
    windows = encode_tagged(tok, a, max_seq_length=8, stride=0)
    with pytest.raises(ValueError, match="shape"):
        predict_spans(a, windows, [np.zeros((3, 3))], TagSet(["X"]))
    with pytest.raises(ValueError, match="outside"):
        predict_spans(a, windows, [np.full(6, 9)], TagSet(["X"]))
    with pytest.raises(ValueError, match="units"):
        align(tok, "ab", [(0, 2), (1, 2)])


def test_special_token_text_in_user_text_stays_text(tok: Tokenizer) -> None:
    a = align(tok, "[MASK]好")
    assert tok.mask_token_id not in a.input_ids


def test_importing_tagging_loads_neither_torch_nor_seqeval() -> None:
    import subprocess
    import sys

    code = "import sys, zoo.tagging; print('torch' in sys.modules, 'seqeval' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.split() == ["False", "False"]
