"""zoo.training.labelled: every format and tag scheme reads to the same examples; every bad input is a DataError
naming file and line. The files are written here, by hand, as users keep them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from zoo.errors import DataError, NotFoundError, UsageError
from zoo.tagging import Span
from zoo.training.labelled import (
    MAX_LINE_BYTES,
    LabelledPair,
    LabelledText,
    check_labels,
    label_set,
    occurrences,
    read_classification,
    read_tagged,
)

# Three sentences: two PER side by side (IOB1 needs its B- there), a one-character LOC (BIOES needs S-), none.
SENTENCES = ["张三在北京大学吃宫保鸡丁", "李四王五去了京", "今天很好"]
EXPECTED = [
    (Span(0, 2, "PER"), Span(3, 7, "ORG"), Span(8, 12, "DISH")),
    (Span(0, 2, "PER"), Span(2, 4, "PER"), Span(6, 7, "LOC")),
    (),
]
CONLL_TAGS = {
    "bio": ["B-PER I-PER O B-ORG I-ORG I-ORG I-ORG O B-DISH I-DISH I-DISH I-DISH",
            "B-PER I-PER B-PER I-PER O O B-LOC", "O O O O"],
    "iob1": ["I-PER I-PER O I-ORG I-ORG I-ORG I-ORG O I-DISH I-DISH I-DISH I-DISH",
             "I-PER I-PER B-PER I-PER O O I-LOC", "O O O O"],
    "bioes": ["B-PER E-PER O B-ORG I-ORG I-ORG E-ORG O B-DISH I-DISH I-DISH E-DISH",
              "B-PER E-PER B-PER E-PER O O S-LOC", "O O O O"],
    "bmes": ["B-PER E-PER O B-ORG M-ORG M-ORG E-ORG O B-DISH M-DISH M-DISH E-DISH",
             "B-PER E-PER B-PER E-PER O O S-LOC", "O O O O"],
}


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def conll(sentences: list[str], tags: list[str], *, sep: str = " ", middle: str = "") -> str:
    blocks = []
    for chars, line in zip(sentences, tags):
        blocks.append("".join(f"{c}{sep}{middle}{t}\n" for c, t in zip(chars, line.split(), strict=True)))
    return "\n".join(blocks)


def spans_of(data) -> list[tuple[str, tuple[Span, ...]]]:
    return [(e.text, e.spans) for e in data.examples]


WANT = list(zip(SENTENCES, EXPECTED))


# ------------------------------------------------------------------------------------------------ formats
@pytest.mark.parametrize("scheme", list(CONLL_TAGS))
def test_conll_in_every_scheme_reads_to_the_same_spans(tmp_path: Path, scheme: str) -> None:
    data = read_tagged(write(tmp_path / f"train.{scheme}", conll(SENTENCES, CONLL_TAGS[scheme])))
    assert (data.format, data.scheme) == ("conll", scheme)
    assert spans_of(data) == WANT
    assert data.labels == ("PER", "ORG", "DISH", "LOC")
    assert [e.line for e in data.examples] == [1, 14, 22]
    assert all(e.units is None for e in data.examples)  # characters are the units


def test_conll_io_where_expressible(tmp_path: Path) -> None:
    text = conll([SENTENCES[0], SENTENCES[2]], [CONLL_TAGS["iob1"][0], "O O O O"])
    data = read_tagged(write(tmp_path / "io.txt", text))
    assert data.scheme == "io"
    assert spans_of(data) == [WANT[0], WANT[2]]


def test_jsonl_reads_to_the_same_spans(tmp_path: Path) -> None:
    lines = [json.dumps({"text": text, "entities": [{"start": s.start, "end": s.end, "label": s.label,
                                                     "text": text[s.start:s.end]} for s in reversed(spans)]},
                        ensure_ascii=False) for text, spans in WANT]
    data = read_tagged(write(tmp_path / "train.jsonl", "\n".join(lines) + "\n\n"))
    assert (data.format, data.scheme) == ("jsonl", "spans")
    assert spans_of(data) == WANT
    assert [e.line for e in data.examples] == [1, 2, 3]
    # detected from the content too, whatever the extension
    assert spans_of(read_tagged(write(tmp_path / "train.txt", "\n".join(lines)))) == WANT


def test_jsonl_entities_lose_the_spaces_at_their_edges_and_exact_repeats(tmp_path: Path) -> None:
    record = {"text": "吃 宫保鸡丁 吧", "entities": [{"start": 1, "end": 7, "label": "D"},
                                                {"start": 2, "end": 6, "label": "D"}]}
    data = read_tagged(write(tmp_path / "t.jsonl", json.dumps(record, ensure_ascii=False)))
    assert data.examples[0].spans == (Span(2, 6, "D"),)
    assert any("trimmed from the edges of 1 entities" in note for note in data.notes)


def test_csv_and_tsv_with_entity_strings(tmp_path: Path) -> None:
    csv_text = ("review,dishes,stars\n"
                "\"宫保鸡丁很好吃, 鸡丁嫩\",宫保鸡丁|鸡丁,5\n"
                "麻婆豆腐和宫保鸡丁都不错,麻婆豆腐 | 宫保鸡丁,4\n"
                ",,\n"
                "没点菜,,3\n")
    data = read_tagged(write(tmp_path / "reviews.csv", csv_text), text_column="review", entity_column="dishes",
                       entity_label="DISH", entity_sep="|")
    assert data.format == "csv"
    assert spans_of(data) == [
        ("宫保鸡丁很好吃, 鸡丁嫩", (Span(0, 4, "DISH"), Span(9, 11, "DISH"))),  # 鸡丁 inside 宫保鸡丁: not again
        ("麻婆豆腐和宫保鸡丁都不错", (Span(0, 4, "DISH"), Span(5, 9, "DISH"))),
        ("没点菜", ()),
    ]
    assert [e.line for e in data.examples] == [2, 3, 5]
    tsv = write(tmp_path / "reviews.tsv", "text\tentities\n\"好\"的宫保鸡丁\t宫保鸡丁\n")
    data = read_tagged(tsv)  # header with the text column: a table; label defaults to the column's name
    assert data.format == "tsv"
    assert spans_of(data) == [('"好"的宫保鸡丁', (Span(4, 8, "entities"),))]


def test_the_same_data_as_csv_and_jsonl(tmp_path: Path) -> None:
    rows = [(text, [s for s in spans if s.label == "DISH"]) for text, spans in WANT]
    table = "text,dish\n" + "".join(f"{text},{'|'.join(text[s.start:s.end] for s in spans)}\n"
                                    for text, spans in rows)
    jsonl = "".join(json.dumps({"text": text, "entities": [{"start": s.start, "end": s.end, "label": "DISH"}
                                                           for s in spans]}) + "\n" for text, spans in rows)
    from_csv = read_tagged(write(tmp_path / "d.csv", table), entity_column="dish", entity_label="DISH",
                           entity_sep="|")
    from_jsonl = read_tagged(write(tmp_path / "d.jsonl", jsonl))
    assert spans_of(from_csv) == spans_of(from_jsonl) == [(t, tuple(s)) for t, s in rows]


def test_occurrences_tag_every_occurrence_longest_first() -> None:
    spans, missing = occurrences("aaa宫保鸡丁鸡丁", ["鸡丁", "宫保鸡丁", "aa", "无"], "D")
    assert spans == [Span(0, 2, "D"), Span(3, 7, "D"), Span(7, 9, "D")]
    assert missing == ["无"]


def test_conll_details(tmp_path: Path) -> None:
    # CoNLL-2003 style: four columns, -DOCSTART-, CRLF endings, a BOM; the tag is the last column
    text = ("\ufeff-DOCSTART- -X- -X- O\r\n\r\n"
            "EU NNP B-NP B-ORG\r\nrejects VBZ B-VP O\r\nGerman JJ B-NP B-MISC\r\n\r\n"
            "Peter NNP B-NP B-PER\r\nBlackburn NNP I-NP I-PER\r\n")
    data = read_tagged(write(tmp_path / "eng.train", text))
    assert data.scheme == "bio"
    assert [e.text for e in data.examples] == ["EU rejects German", "Peter Blackburn"]
    assert data.examples[0].spans == (Span(0, 2, "ORG"), Span(11, 17, "MISC"))
    assert data.examples[0].units == ((0, 2), (3, 10), (11, 17))
    assert data.examples[1].spans == (Span(0, 15, "PER"),)
    assert data.examples[0].line == 3
    assert any("columns 2-3 are ignored" in note for note in data.notes)
    # tabs, underscores, a full-width space as a token
    data = read_tagged(write(tmp_path / "tabs.tsv", "北\tB_LOC\n京\tI_LOC\n\u3000\tO\n好\tO\n"))
    assert data.format == "conll"
    assert spans_of(data) == [("北京\u3000好", (Span(0, 2, "LOC"),))]
    assert data.examples[0].unit_offsets() == [(0, 1), (1, 2), (2, 3), (3, 4)]


def test_scheme_given_reads_dev_like_train(tmp_path: Path) -> None:
    dev = write(tmp_path / "dev.txt", conll(["北京"], ["B-LOC E-LOC"]))
    assert spans_of(read_tagged(dev, scheme="bioes")) == [("北京", (Span(0, 2, "LOC"),))]
    with pytest.raises(DataError, match=r"dev\.txt:2: 'E-LOC' is a tag from another scheme"):
        read_tagged(dev, scheme="bio")
    with pytest.raises(UsageError):
        read_tagged(dev, scheme="bilou")


def test_classification_formats(tmp_path: Path) -> None:
    tsv = write(tmp_path / "train.tsv", 'label\ttext_a\ttext_b\n1\t"好"吃\t不错\n0\t难吃, 真的\t差\n')
    data = read_classification(tsv)
    assert data.format == "tsv"
    assert data.examples == (LabelledPair('"好"吃', "不错", "1", 2), LabelledPair("难吃, 真的", "差", "0", 3))
    assert data.labels == ("1", "0")
    csv_ = write(tmp_path / "train.csv", 'text_a,label,source\n"好吃, 真的",pos,web\n\n难吃,neg,app\n')
    data = read_classification(csv_)
    assert data.examples == (LabelledPair("好吃, 真的", None, "pos", 2), LabelledPair("难吃", None, "neg", 4))
    assert any("'source'" in note for note in data.notes)
    jsonl = write(tmp_path / "train.json", '{"text": "好", "label": 1}\n{"text": "问", "text_pair": "答", '
                                            '"label": "0"}\n')
    data = read_classification(jsonl)
    assert data.format == "jsonl"
    assert data.examples == (LabelledPair("好", None, "1", 1), LabelledPair("问", "答", "0", 2))


def test_label_sets(tmp_path: Path) -> None:
    train = read_classification(write(tmp_path / "train.tsv", "label\ttext_a\nb\tx\na\ty\nb\tz\n"))
    dev = read_classification(write(tmp_path / "dev.tsv", "label\ttext_a\na\tx\nc\ty\n"))
    assert label_set(train) == ("b", "a")
    with pytest.raises(DataError, match=r"dev\.tsv:3: label 'c' is not among the training labels") as info:
        check_labels(dev, label_set(train))
    assert "--labels" in str(info.value)
    labels = label_set(train, ["a", "b", "c"])
    assert labels == ("a", "b", "c")
    check_labels(dev, labels)
    with pytest.raises(DataError, match=r"train\.tsv:2: label 'b'"):
        label_set(train, ["a"])
    with pytest.raises(UsageError):
        label_set(train, ["a", "a"])
    tagged_train = read_tagged(write(tmp_path / "t.txt", conll(SENTENCES, CONLL_TAGS["bio"])))
    tagged_dev = read_tagged(write(tmp_path / "d.txt", "今 O\n天 O\n\n北 B-GPE\n京 I-GPE\n"))
    with pytest.raises(DataError, match=r"d\.txt:4: label 'GPE'"):
        check_labels(tagged_dev, label_set(tagged_train))
    no_entities = read_tagged(write(tmp_path / "o.txt", "今 O\n天 O\n"))
    with pytest.raises(DataError, match="no entity"):
        label_set(no_entities)


def test_example_units_of_characters(tmp_path: Path) -> None:
    example = LabelledText("ab", (Span(0, 1, "X"),))
    assert example.unit_offsets() == [(0, 1), (1, 2)]


# ------------------------------------------------------------------------------------------- bad input
TAGGED_BAD = [
    # (file name, content, read_tagged options, line, message)
    ("unknown.txt", "北 B-LOC\n京 X-LOC\n", {}, 2, "'X-LOC' is not a tag"),
    ("illformed.txt", "北 B-LOC\n\n京 B-\n", {}, 3, "'B-' is not a tag"),
    ("scheme.txt", "北 B-LOC\n京 I-LOC\n\n好 S-LOC\n", {"scheme": "bio"}, 4, "another scheme"),
    ("io.txt", "北 I-LOC\n京 B-LOC\n", {"scheme": "io"}, 2, "another scheme"),
    ("one_column.txt", "北 B-LOC\n京\n", {}, 2, "expected a token and its tag"),
    ("columns.txt", "北 x B-LOC\n京 I-LOC\n", {}, 2, "2 columns, but line 1 has 3"),
    ("outside.jsonl", '{"text": "北京", "entities": [{"start": 0, "end": 3, "label": "LOC"}]}\n', {}, 1,
     "outside the text of 2 characters"),
    ("negative.jsonl", ('{"text": "北京", "entities": []}\n{"text": "北京", "entities": [{"start": -1, "end": 1, '
                       '"label": "LOC"}]}\n'), {}, 2, "outside the text"),
    ("overlap.jsonl", ('\n{"text": "北京大学", "entities": [{"start": 0, "end": 2, "label": "LOC"}, '
                      '{"start": 1, "end": 4, "label": "ORG"}]}\n'), {}, 2, "overlap"),
    ("bytes.jsonl", '{"text": "北京", "entities": [{"start": 0, "end": 6, "label": "LOC", "text": "北京"}]}\n',
     {}, 1, "outside the text"),
    ("mismatch.jsonl", '{"text": "北京大学", "entities": [{"start": 0, "end": 2, "label": "LOC", "text": "大学"}]}\n',
     {}, 1, "says '大学'"),
    ("no_entities.jsonl", '{"text": "北京"}\n', {}, 1, "'entities' must be a list"),
    ("float.jsonl", '{"text": "北京", "entities": [{"start": 0.0, "end": 2, "label": "L"}]}\n', {}, 1,
     "'start' must be a character offset"),
    ("bool.jsonl", '{"text": "北京", "entities": [{"start": true, "end": 2, "label": "L"}]}\n', {}, 1,
     "'start' must be a character offset"),
    ("spaces.jsonl", '{"text": "北 京", "entities": [{"start": 1, "end": 2, "label": "L"}]}\n', {}, 1,
     "only whitespace"),
    ("notjson.jsonl", '{"text": "北京", "entities": []}\n{"text": \n', {}, 2, "not JSON"),
    ("array.json", '[\n{"text": "北京", "entities": []}\n]\n', {}, 1, "a JSON array"),
    ("list.jsonl", '["北京"]\n', {}, 1, "expected a JSON object"),
    ("missing.csv", "review,dish\n好吃,鸡\n", {}, 1, ("no columns 'text', 'entities' in the header; the "
                                                   "columns are 'review', 'dish'")),
    ("fields.csv", "text,entities\n宫保鸡丁,宫保鸡丁\n麻婆豆腐,麻婆豆腐,x\n", {}, 3, "3 fields, but the header has 2"),
    ("notfound.csv", "text,entities\n宫保鸡丁,宫保鸡丁\n麻婆豆腐,宫保鸡丁\n", {}, 3, "'宫保鸡丁' does not occur"),
    ("quote.csv", 'text,entities\n"宫保"鸡丁,鸡丁\n', {}, 2, "malformed CSV"),
    ("emptytext.csv", "text,entities\n,鸡丁\n", {}, 2, "empty text"),
]


@pytest.mark.parametrize(("name", "content", "options", "line", "message"), TAGGED_BAD,
                         ids=[case[0] for case in TAGGED_BAD])
def test_bad_tagged_input_is_a_data_error_naming_file_and_line(tmp_path: Path, name: str, content: str,
                                                                options: dict, line: int, message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        read_tagged(path, **options)
    assert f"{path}:{line}: " in str(info.value)
    assert message in str(info.value)
    assert info.value.exit_code == 12


CLASSIFICATION_BAD = [
    ("header.tsv", "1\t好吃\n0\t难吃\n", 1, "no columns 'label', 'text_a' in the header; the columns are '1', '好吃'"),
    ("fields.tsv", "label\ttext_a\n1\t好\t吃\n", 2, "3 fields, but the header has 2"),
    ("emptylabel.tsv", "label\ttext_a\n1\t好\n\t吃\n", 3, "empty label"),
    ("nolabel.jsonl", '{"text": "好"}\n', 1, "'label' must be a string"),
    ("floatlabel.jsonl", '{"text": "好", "label": 0.5}\n', 1, "'label' must be a string"),
    ("pair.jsonl", '{"text": "好", "text_pair": 3, "label": "1"}\n', 1, "'text_pair' must be a string"),
]


@pytest.mark.parametrize(("name", "content", "line", "message"), CLASSIFICATION_BAD,
                         ids=[case[0] for case in CLASSIFICATION_BAD])
def test_bad_classification_input_is_a_data_error_naming_file_and_line(tmp_path: Path, name: str, content: str,
                                                                        line: int, message: str) -> None:
    path = write(tmp_path / name, content)
    with pytest.raises(DataError) as info:
        read_classification(path)
    assert f"{path}:{line}: " in str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("read", [read_tagged, read_classification])
def test_non_utf8_bytes_name_the_line(tmp_path: Path, read) -> None:
    path = write(tmp_path / "gbk.txt", "label\ttext_a\n1\t好\n", "utf-8")
    path.write_bytes(path.read_bytes() + "0\t难吃\n".encode("gbk"))
    with pytest.raises(DataError, match=r"gbk\.txt:3: not UTF-8 text \(byte 0xc4") as info:
        read(path)
    assert "iconv" in str(info.value)


@pytest.mark.parametrize("content", ["", "\n\n  \n"], ids=["empty", "blank"])
@pytest.mark.parametrize("read", [read_tagged, read_classification])
def test_an_empty_file_is_a_data_error(tmp_path: Path, read, content: str) -> None:
    path = write(tmp_path / "empty.txt", content)
    with pytest.raises(DataError, match=r"empty\.txt: the file is empty"):
        read(path)
    with pytest.raises(DataError, match=r"empty\.jsonl: holds no examples"):
        read(write(tmp_path / "empty.jsonl", content))


def test_an_absurdly_long_line_is_refused_before_it_is_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"text": "ok", "entities": []}\n' + b"x" * (MAX_LINE_BYTES + 10))
    with pytest.raises(DataError, match=r"long\.jsonl:2: line longer than 4 MiB"):
        read_tagged(path)
    path.write_bytes(b'{"text": "' + b"a" * (MAX_LINE_BYTES - 40) + b'", "entities": []}\n')
    assert len(read_tagged(path).examples[0].text) == MAX_LINE_BYTES - 40  # just under the limit: fine


def test_missing_files_and_unknown_formats(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        read_tagged(tmp_path / "nope.txt")
    with pytest.raises(NotFoundError):
        read_classification(tmp_path)
    path = write(tmp_path / "x.txt", "北 O\n")
    with pytest.raises(UsageError, match="unknown data format"):
        read_tagged(path, format="xml")
