"""zoo's tokenizer against transformers' BertTokenizerLegacy (pure Python) and BertTokenizer (v5).

The vocab is built here from the committed corpus: every character (and a few word pieces) of most of it,
with some characters left out on purpose so that [UNK] and WordPiece fallbacks happen.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zoo.errors import CheckpointError, UsageError
from zoo.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
from transformers.models.bert.tokenization_bert_legacy import BasicTokenizer, BertTokenizerLegacy, WordpieceTokenizer

CORPUS = Path(__file__).parent / "fixtures" / "tokenizer_corpus.txt"
LEFT_OUT = set("公🎉臺ö")  # not in the vocab: become [UNK] (or break a word into [UNK])
WORDPIECES = ["play", "##ing", "##ed", "##er", "un", "##play", "##able", "the", "quick", "brown", "fox",
              "super", "##cal", "##if", "iphone", "pro", "max", "nice", "café", "cafe", "gpu", "bert", "##ert",
              "[", "]", "mask", "cls", "##ep"]
#: Texts holding the special tokens' strings: corpus and fine-tuning text, where they are plain text.
SPECIAL_STRINGS = ["今天天气很[MASK]。", "[CLS]你好[SEP]世界[SEP]", "[PAD][PAD] [UNK]x", "[mask] [Mask]", "[MASK]",
                   "北京[SEP ]大学[[CLS]]", "iPhone[MASK]pro"]


def corpus() -> list[str]:
    texts = CORPUS.read_text(encoding="utf-8").splitlines()
    long_text = "这是一个很长的句子，用来测试截断。This sentence is long. " * 60
    return [*texts, "", long_text, "nul\x00byte"]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chars = sorted({c for text in corpus() for c in text.lower() if not c.isspace()} - LEFT_OUT)
    tokens = ["[PAD]", *(f"[unused{i}]" for i in range(1, 4)), "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += chars + [f"##{c}" for c in chars if c.isascii() and c.isalnum()] + WORDPIECES
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_ids_match_transformers_legacy_and_fast(vocab_file: Path, lowercase: bool) -> None:
    ours = Tokenizer.from_file(vocab_file, lowercase=lowercase)
    legacy = BertTokenizerLegacy(str(vocab_file), do_lower_case=lowercase)
    fast = transformers.BertTokenizer(vocab=str(vocab_file), do_lower_case=lowercase)
    texts = corpus()
    unk_seen = 0
    for text in texts:
        ids = ours(text)["input_ids"]
        assert ids == legacy.encode(text), text
        assert ids == fast(text)["input_ids"], text
        assert ours.tokenize(text) == legacy.tokenize(text), text
        unk_seen += ids.count(ours.unk_token_id)
    assert unk_seen > 0  # the corpus exercises unknown characters
    for a, b in zip(texts, texts[1:]):  # pairs: ids and token types
        got = ours(a, b, truncation=True, max_length=64)
        want = legacy(a, b, truncation=True, max_length=64, return_token_type_ids=True)
        assert got["input_ids"] == want["input_ids"]
        assert got["token_type_ids"] == want["token_type_ids"]


def test_batch_padding_truncation_and_tensors(vocab_file: Path) -> None:
    tok = Tokenizer.from_file(vocab_file, model_max_length=16)
    legacy = BertTokenizerLegacy(str(vocab_file))
    texts = ["今天天气很好", corpus()[-2], ""]
    batch = tok(texts, padding=True, truncation=True, return_tensors="pt")
    want = legacy(texts, padding=True, truncation=True, max_length=16, return_tensors="pt",
                  return_token_type_ids=True)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert batch[key].tolist() == want[key].tolist(), key
    assert batch["input_ids"].shape == (3, 16)
    assert batch["input_ids"][2].tolist()[:2] == [tok.cls_token_id, tok.sep_token_id]
    fixed = tok(["你好"], padding="max_length", max_length=8)
    assert fixed["input_ids"][0][4:] == [tok.pad_token_id] * 4 and fixed["attention_mask"][0] == [1] * 4 + [0] * 4
    with pytest.raises(UsageError, match="padding=True"):
        tok(["你好", "今天天气很好"], return_tensors="pt")


def test_offsets_point_into_the_text(vocab_file: Path) -> None:
    tok = Tokenizer.from_file(vocab_file)
    text = "我在用iPhone拍照"
    enc = tok(text, return_offsets_mapping=True)
    pieces = [text[a:b] for a, b in enc["offset_mapping"]]
    assert pieces == ["", "我", "在", "用", "iPhone", "拍", "照", ""]


def test_mask_token_survives_and_decode(vocab_file: Path) -> None:
    tok = Tokenizer.from_file(vocab_file)
    ids = tok("今天天气很[MASK]。")["input_ids"]
    assert ids.count(tok.mask_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == "今 天 天 气 很 。"
    assert tok.convert_ids_to_tokens(tok.encode("playing")) == ["[CLS]", "play", "##ing", "[SEP]"]
    with pytest.raises(UsageError, match="outside the vocabulary"):
        tok.convert_ids_to_tokens([10**6])


@pytest.mark.parametrize("lowercase", [True, False], ids=["uncased", "cased"])
def test_special_token_strings_in_raw_text_are_plain_text(vocab_file: Path, lowercase: bool) -> None:
    """``split_special_tokens=True``: "[MASK]" in raw text is the characters it is made of, as upstream's
    FullTokenizer (BasicTokenizer without never_split, then WordPiece) tokenizes it: ``[``, ``mask``, ``]``."""
    ours = Tokenizer.from_file(vocab_file, lowercase=lowercase)
    fast = transformers.BertTokenizer(vocab=str(vocab_file), do_lower_case=lowercase, split_special_tokens=True)
    basic = BasicTokenizer(do_lower_case=lowercase, never_split=None)
    wordpiece = WordpieceTokenizer(vocab=BertTokenizerLegacy(str(vocab_file)).vocab, unk_token="[UNK]")
    made_by_zoo = ours.special_ids - {ours.unk_token_id}  # [UNK] also stands for characters outside the vocab
    for text in SPECIAL_STRINGS:
        want = [piece for word in basic.tokenize(text) for piece in wordpiece.tokenize(word)]
        assert ours.tokenize(text, split_special_tokens=True) == want, text
        ids = ours(text, split_special_tokens=True)["input_ids"]
        assert ids == [ours.cls_token_id, *ours.convert_tokens_to_ids(want), ours.sep_token_id], text
        assert ids == fast(text)["input_ids"], text
        assert ours.encode(text, split_special_tokens=True) == ids
        assert not made_by_zoo & set(ids[1:-1]), text
    assert ours.tokenize("[MASK]", split_special_tokens=True) == (["[", "mask", "]"] if lowercase
                                                                  else ["[", "[UNK]", "]"])
    texts = SPECIAL_STRINGS
    assert ours.batch_ids(texts, split_special_tokens=True) == [fast(t, add_special_tokens=False)["input_ids"]
                                                                for t in texts]
    got = ours(texts[:-1], texts[1:], split_special_tokens=True, padding=True, truncation=True, max_length=12)
    want_pairs = fast(texts[:-1], texts[1:], padding=True, truncation=True, max_length=12)
    for key in ("input_ids", "attention_mask", "token_type_ids"):
        assert got[key] == want_pairs[key], key
    # Without the option (fill-mask: the user's [MASK] is the point) the strings stay special tokens, and a
    # call with the option leaves no state behind.
    assert ours("今天天气很[MASK]。")["input_ids"].count(ours.mask_token_id) == 1
    assert ours.batch_ids(["[CLS]你好"]) == [[ours.cls_token_id, *ours.convert_tokens_to_ids(["你", "好"])]]
    assert ours(texts, padding=True)["input_ids"] == BertTokenizerLegacy(str(vocab_file), do_lower_case=lowercase)(
        texts, padding=True)["input_ids"]


def test_second_column_and_duplicates(tmp_path: Path) -> None:
    lines = ["[PAD]\t0", "[UNK]\t0", "[CLS]\t0", "[SEP]\t0", "[MASK]\t0", "你\t120", "好\t99", "你\t5", "们 7"]
    path = tmp_path / "vocab_chinese.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tok = Tokenizer.from_file(path)
    assert tok.vocab_size == 9  # ids follow lines: the repeated line keeps its slot
    assert tok("你们好")["input_ids"] == [2, 5, 8, 6, 3]  # the duplicated 你 keeps its first id
    assert tok.convert_ids_to_tokens([5, 8]) == ["你", "们"]
    assert tok.convert_ids_to_tokens(7) != "你"  # its later slot is a placeholder no text produces


def test_placeholders_of_a_compact_vocab_are_unreachable(tmp_path: Path) -> None:
    """An ALBERT-ordered (compact) vocab writes an empty line as ``[zoo-empty]``, without a line number: fill-mask
    must never rank it, like the numbered placeholders of a BERT-ordered vocab."""
    from zoo.vocab import read_vocab

    source = tmp_path / "vocab_chinese.txt"
    source.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n你\n\n好\n你\n", encoding="utf-8")
    compact, lines = read_vocab(source, compact=True), read_vocab(source)
    assert compact.tokens[6] == "[zoo-empty]" and lines.tokens[6] == "[zoo-empty-6]"
    for name, vocab in (("compact.txt", compact), ("lines.txt", lines)):
        (tmp_path / name).write_text(vocab.text(), encoding="utf-8")
        tok = Tokenizer.from_file(tmp_path / name)
        placeholders = {i for i, t in enumerate(tok.tokens) if t.startswith("[zoo-")}
        assert placeholders and tok.unreachable_ids == placeholders, name
        assert 6 in tok.unreachable_ids and not placeholders & set(tok("你 [zoo-empty] 好")["input_ids"])


def test_vocab_without_special_tokens_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n你\n", encoding="utf-8")
    with pytest.raises(CheckpointError, match=r"lacks the special token\(s\) \[CLS\], \[SEP\], \[MASK\]"):
        Tokenizer.from_file(path)
