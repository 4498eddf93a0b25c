"""zoo.training.corpus: reading upstream-format corpora and the tokenized, memory-mapped directory."""

from __future__ import annotations

import gzip
import importlib.util
import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from zoo.errors import DataError, NotFoundError, UsageError
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import ARRAY_FILES, META_FILE, TokenizedCorpus, WordMode, prepare_corpus

WORDS = ["今天", "天气", "很好", "我们", "一起", "学习", "中文", "自然", "语言", "处理", "北京", "大学", "研究",
         "模型", "训练", "数据", "时间", "朋友", "电脑", "手机", "喜欢", "工作", "问题", "方法", "世界", "人民"]
CHARS = sorted(set("".join(WORDS)) | set("的了是在有和也就都很，。！？"))
PIECES = ["play", "##ing", "##ed", "the", "game", "##s", "1", "##2", "##3", "[", "]", "mask", "cls", "sep", "pad",
          "unk"]


def write_vocab(path: Path) -> Path:
    tokens = ["[PAD]", "[unused1]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS, *PIECES]
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


def sentence(rng: random.Random) -> str:
    words = [rng.choice(WORDS) for _ in range(rng.randint(2, 8))]
    if rng.random() < 0.2:
        words.insert(rng.randrange(len(words)), " playing the games ")
    return "".join(words) + rng.choice("，。！？")


def write_corpus(path: Path, documents: int, seed: int = 0) -> list[list[str]]:
    rng = random.Random(seed)
    docs = [[sentence(rng) for _ in range(rng.randint(1, 12))] for _ in range(documents)]
    path.write_text("\n\n".join("\n".join(doc) for doc in docs) + "\n", encoding="utf-8")
    return docs


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory: pytest.TempPathFactory) -> Tokenizer:
    return Tokenizer.from_file(write_vocab(tmp_path_factory.mktemp("vocab") / "vocab.txt"))


def arrays(corpus: TokenizedCorpus) -> dict[str, np.ndarray]:
    return {key: np.array(getattr(corpus, key)) for key in ARRAY_FILES}


def test_documents_sentences_and_layout(tmp_path: Path, tokenizer: Tokenizer) -> None:
    text = ("\n \n"  # leading blank lines start nothing
            "今天天气很好。\n  我们一起学习中文！  \n"
            "\u3000\n"  # a whitespace-only line is a document break too
            "北京大学\n\x00\x01\n"  # a line that tokenizes to nothing is dropped
            "\n\n\n"
            "\x02\n"  # a document whose only line tokenizes to nothing is dropped
            "\n"
            "playing the games\n")
    (tmp_path / "a.txt").write_text(text, encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeff研究模型\n训练数据\n", encoding="utf-8")  # BOM; no break: warns
    corpus = prepare_corpus([tmp_path / "a.txt", tmp_path / "b.txt"], tokenizer, tmp_path / "tok")
    want_docs = [["今天天气很好。", "我们一起学习中文！"], ["北京大学"], ["playing the games"],
                 ["研究模型", "训练数据"]]  # the end of a.txt ends its document
    assert corpus.num_documents == 4
    for d, doc in enumerate(want_docs):
        assert [s.tolist() for s in corpus.sentences(d)] == tokenizer.batch_ids(doc)
    assert corpus.meta["counts"] == {"tokens": corpus.num_tokens, "sentences": 6, "documents": 4,
                                     "lines": 15, "dropped_sentences": 2}
    # word starts: a token plus its ## pieces; every CJK character is a word
    d2 = slice(*corpus.document_token_range(2))
    assert tokenizer.convert_ids_to_tokens(corpus.tokens[d2].tolist()) == ["play", "##ing", "the", "game", "##s"]
    assert corpus.word_starts[d2].tolist() == [True, False, True, True, False]
    assert corpus.word_starts[slice(*corpus.document_token_range(0))].all()
    # the on-disk arrays are plain .npy files
    for key, name in ARRAY_FILES.items():
        loaded = np.load(tmp_path / "tok" / name, mmap_mode="r")
        assert np.array_equal(loaded, getattr(corpus, key)), key
    assert corpus.tokens.dtype == np.int32 and corpus.word_starts.dtype == np.bool_
    assert corpus.sentence_offsets.dtype == np.int64 and corpus.document_offsets.tolist() == [0, 2, 3, 4, 6]
    assert corpus.document_of_token(corpus.document_token_range(3)[0]) == 3
    meta = json.loads((tmp_path / "tok" / META_FILE).read_text(encoding="utf-8"))
    assert [f["name"] for f in meta["files"]] == ["a.txt", "b.txt"]
    assert meta["files"][0]["size"] == len(text.encode("utf-8"))
    assert meta["tokenizer"]["lowercase"] is True and meta["words"] == {"mode": "wordpiece"}


def test_small_batches_gz_and_progress_give_the_same_arrays(tmp_path: Path, tokenizer: Tokenizer) -> None:
    write_corpus(tmp_path / "c.txt", 60)
    data = (tmp_path / "c.txt").read_bytes()
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress(data))
    progress: list[tuple[int, int]] = []
    whole = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "whole", batch_chars=1 << 30)
    small = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "small", batch_chars=7,
                           on_progress=lambda done, total: progress.append((done, total)))
    packed = prepare_corpus([tmp_path / "c.txt.gz"], tokenizer, tmp_path / "gz", batch_chars=100)
    for other in (small, packed):
        got = arrays(other)
        for key, value in arrays(whole).items():
            assert np.array_equal(got[key], value), key
    assert whole.num_documents == 60
    assert len(progress) > 10
    assert all(b[0] >= a[0] for a, b in zip(progress, progress[1:]))
    assert progress[-1] == (len(data), len(data))
    gz_record = packed.meta["files"][0]
    assert gz_record["size"] == (tmp_path / "c.txt.gz").stat().st_size  # the file as stored, compressed
    import hashlib
    assert gz_record["sha256"] == hashlib.sha256((tmp_path / "c.txt.gz").read_bytes()).hexdigest()


def test_non_utf8_names_file_and_line(tmp_path: Path, tokenizer: Tokenizer) -> None:
    bad = "今天天气很好\n\n我们一起学习\n".encode() + "北京大学\n".encode("gbk")
    (tmp_path / "gbk.txt").write_bytes(bad)
    (tmp_path / "gbk.txt.gz").write_bytes(gzip.compress(bad))
    for name in ("gbk.txt", "gbk.txt.gz"):
        with pytest.raises(DataError, match=rf"{name}:4: not UTF-8") as info:
            prepare_corpus([tmp_path / name], tokenizer, tmp_path / "tok")
        assert info.value.exit_code == 12 and "iconv" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gbk.txt", "gbk.txt.gz"]  # nothing left behind


def test_damaged_gzip_and_empty_corpus(tmp_path: Path, tokenizer: Tokenizer) -> None:
    write_corpus(tmp_path / "c.txt", 20)
    packed = gzip.compress((tmp_path / "c.txt").read_bytes())
    (tmp_path / "cut.txt.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(DataError, match=r"cut\.txt\.gz: damaged gzip data after line \d+"):
        prepare_corpus([tmp_path / "cut.txt.gz"], tokenizer, tmp_path / "tok")
    (tmp_path / "blank.txt").write_text("\n  \n\u3000\n\x00\x01\n\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"blank\.txt: the corpus holds no tokens \(5 lines read\)"):
        prepare_corpus([tmp_path / "blank.txt"], tokenizer, tmp_path / "tok")
    (tmp_path / "empty.txt").write_bytes(b"")
    with pytest.raises(DataError, match="holds no tokens"):
        prepare_corpus([tmp_path / "empty.txt"], tokenizer, tmp_path / "tok")
    assert not (tmp_path / "tok").exists()
    with pytest.raises(NotFoundError, match="missing.txt: corpus file does not exist"):
        prepare_corpus([tmp_path / "missing.txt"], tokenizer, tmp_path / "tok")
    with pytest.raises(UsageError, match="no corpus files"):
        prepare_corpus([], tokenizer, tmp_path / "tok")
    with pytest.raises(UsageError, match="words="):
        prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "tok", words="ltp")  # type: ignore[arg-type]


def test_warns_for_a_file_without_document_breaks(tmp_path: Path, tokenizer: Tokenizer,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "one.txt").write_text("\n今天天气很好\n我们一起学习\n北京大学\n\n", encoding="utf-8")
    (tmp_path / "two.txt").write_text("今天天气很好\n\n我们一起学习\n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        corpus = prepare_corpus([tmp_path / "one.txt"], tokenizer, tmp_path / "one")
    warnings = [r for r in caplog.records if r.name == "zoo.training" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "one.txt" in warnings[0].getMessage()
    assert "no blank line between documents" in warnings[0].getMessage()
    assert corpus.num_documents == 1 and corpus.num_sentences == 3
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="zoo.training"):
        assert prepare_corpus([tmp_path / "two.txt"], tokenizer, tmp_path / "two").num_documents == 2
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_reuse_and_rebuild(tmp_path: Path, tokenizer: Tokenizer, caplog: pytest.LogCaptureFixture) -> None:
    docs = write_corpus(tmp_path / "c.txt", 30)
    out = tmp_path / "tok"
    first = prepare_corpus([tmp_path / "c.txt"], tokenizer, out)
    stamp = (out / "tokens.npy").stat().st_mtime_ns, (out / "tokens.npy").stat().st_ino

    def built() -> bool:
        st = (out / "tokens.npy").stat()
        return (st.st_mtime_ns, st.st_ino) != stamp

    with caplog.at_level(logging.INFO, logger="zoo.training"):
        again = prepare_corpus([tmp_path / "c.txt"], tokenizer, out)
    assert not built() and "reusing" in caplog.text
    assert np.array_equal(again.tokens, first.tokens)

    # Same size, different content: the sha256 catches it.
    text = (tmp_path / "c.txt").read_text(encoding="utf-8")
    swapped = text.replace(docs[0][0], docs[0][0][::-1], 1)
    assert len(swapped.encode()) == len(text.encode()) and swapped != text
    (tmp_path / "c.txt").write_text(swapped, encoding="utf-8")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="zoo.training"):
        prepare_corpus([tmp_path / "c.txt"], tokenizer, out)
    assert built() and "changed (sha256)" in caplog.text
    stamp = (out / "tokens.npy").stat().st_mtime_ns, (out / "tokens.npy").stat().st_ino

    # Other tokenizer options rebuild; so does rebuild=True. A damaged directory is an error naming the file: it
    # is rebuilt once deleted, as the hint says.
    vocab = write_vocab(tmp_path / "vocab.txt")
    prepare_corpus([tmp_path / "c.txt"], Tokenizer.from_file(vocab, lowercase=False), out)
    assert built()
    stamp = (out / "tokens.npy").stat().st_mtime_ns, (out / "tokens.npy").stat().st_ino
    prepare_corpus([tmp_path / "c.txt"], Tokenizer.from_file(vocab, lowercase=False), out)
    assert not built()
    prepare_corpus([tmp_path / "c.txt"], Tokenizer.from_file(vocab, lowercase=False), out, rebuild=True)
    assert built()
    with (out / "tokens.npy").open("r+b") as f:
        f.truncate(200)
    stamp = (out / "tokens.npy").stat().st_mtime_ns, (out / "tokens.npy").stat().st_ino
    with pytest.raises(DataError, match="tokens.npy: damaged tokenized corpus") as damaged:
        TokenizedCorpus.open(out)
    with pytest.raises(DataError, match="tokens.npy: damaged tokenized corpus"):
        prepare_corpus([tmp_path / "c.txt"], Tokenizer.from_file(vocab, lowercase=False), out)
    assert damaged.value.hint == f"delete {out} to rebuild it: the next run tokenizes the corpus again"
    shutil.rmtree(out)
    repaired = prepare_corpus([tmp_path / "c.txt"], Tokenizer.from_file(vocab, lowercase=False), out)
    assert built() and repaired.num_documents == 30
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt", "tok", "vocab.txt"]  # no staging left


def test_digests_the_caller_made_are_compared_instead_of_reading_the_files(
        tmp_path: Path, tokenizer: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """zoo pretrain hashes its inputs for --resume: reuse compares those digests, the corpus is read once."""
    from zoo.training import corpus as corpus_module

    write_corpus(tmp_path / "c.txt", 10)
    out = tmp_path / "tok"
    digest = corpus_module.sha256_file(tmp_path / "c.txt")[0]
    prepare_corpus([tmp_path / "c.txt"], tokenizer, out)
    built = (out / "tokens.npy").stat().st_ino

    def no_second_read(path: Path) -> tuple[str, int]:
        raise AssertionError(f"{path} hashed again")

    monkeypatch.setattr(corpus_module, "sha256_file", no_second_read)
    prepare_corpus([tmp_path / "c.txt"], tokenizer, out, sha256=[digest])
    assert (out / "tokens.npy").stat().st_ino == built  # reused
    monkeypatch.undo()
    prepare_corpus([tmp_path / "c.txt"], tokenizer, out, sha256=["0" * 64])  # another content: rebuilt
    assert (out / "tokens.npy").stat().st_ino != built
    with pytest.raises(UsageError, match="1 digests for 2 files"):
        prepare_corpus([tmp_path / "c.txt"] * 2, tokenizer, out, sha256=[digest])


def test_jieba_words(tmp_path: Path, tokenizer: Tokenizer) -> None:
    jieba = pytest.importorskip("jieba")
    rng = random.Random(3)
    lines = ["".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9))) for _ in range(40)]
    lines.append("我们 playing the games 研究")
    (tmp_path / "c.txt").write_text("\n".join(lines[:20]) + "\n\n" + "\n".join(lines[20:]) + "\n",
                                    encoding="utf-8")
    corpus = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "tok", words="jieba", batch_chars=50)
    assert corpus.words == "jieba" and corpus.meta["words"]["jieba_version"] == jieba.__version__
    segmenter = jieba.Tokenizer()
    multi_char = 0
    for s, line in enumerate(lines[:-1]):  # Chinese only: token i is character i
        want: list[bool] = []
        for word in segmenter.cut(line):
            want += [True] + [False] * (len(word) - 1)
            multi_char += len(word) > 1
        got = corpus.word_starts[corpus.sentence_offsets[s]:corpus.sentence_offsets[s + 1]]
        assert got.tolist() == want, line
    assert multi_char > 50  # jieba really grouped characters
    last = corpus.word_starts[corpus.sentence_offsets[-2]:]
    assert last.tolist() == [True, False, True, False, True, True, False, True, False]  # 我们 play ##ing ...
    # The word mode is part of what a directory was built from.
    default = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "tok")
    pieces = tokenizer.convert_ids_to_tokens(default.tokens.tolist())
    assert default.words == "wordpiece"
    assert default.word_starts.tolist() == [not p.startswith("##") for p in pieces]
    assert not np.array_equal(default.word_starts, corpus.word_starts)


@pytest.mark.parametrize("words", ["wordpiece", pytest.param("jieba", marks=pytest.mark.skipif(
    importlib.util.find_spec("jieba") is None, reason="jieba is not installed"))])
def test_special_token_strings_in_the_corpus_are_text(tmp_path: Path, tokenizer: Tokenizer, words: WordMode) -> None:
    """"[MASK]", "[PAD]", ... written in a corpus are text, as upstream's tokenizer reads them: examples get
    special ids only where zoo puts them ([CLS]/[SEP], masks, padding)."""
    from zoo.training.instances import InstanceSampler
    from zoo.training.masking import ExampleBuilder, MaskingConfig

    lines = ["今天[MASK]很好", "[CLS]我们[SEP]学习[PAD][PAD]", "[UNK] [mask]"]
    (tmp_path / "c.txt").write_text("\n".join(lines * 3) + "\n\n" + "\n".join(lines) + "\n", encoding="utf-8")
    corpus = prepare_corpus([tmp_path / "c.txt"], tokenizer, tmp_path / "tok", batch_chars=10, words=words)
    got = [tokenizer.convert_ids_to_tokens(s.tolist()) for s in corpus.sentences(1)]
    assert got == [["今", "天", "[", "mask", "]", "很", "好"],
                   ["[", "cls", "]", "我", "们", "[", "sep", "]", "学", "习", "[", "pad", "]", "[", "pad", "]"],
                   ["[", "unk", "]", "[", "mask", "]"]]
    assert not set(corpus.tokens.tolist()) & tokenizer.special_ids
    builder = ExampleBuilder.from_tokenizer(tokenizer, MaskingConfig.albert(24))
    for instance in InstanceSampler(corpus, max_seq_length=24).epoch(0):
        example = builder.build(corpus, instance, 0)
        attended = example.input_ids[example.attention_mask == 1].tolist()
        assert tokenizer.pad_token_id not in attended
        assert attended.count(tokenizer.cls_token_id) == 1 and attended.count(tokenizer.sep_token_id) == 2
        assert not set(example.labels[example.labels >= 0].tolist()) & tokenizer.special_ids


def test_a_long_line_is_cut_into_sentences_at_word_boundaries(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """A line longer than ``max_line_chars`` becomes several sentences, cut after a space, punctuation or
    CJK character, so its tokens are exactly those of the whole line; only the pieces are held."""
    rng = random.Random(5)
    long_line = "".join(sentence(rng) for _ in range(60))  # CJK with " playing the games " in places
    ascii_line = " ".join(["playing", "the", "games,"] * 40)
    lines = ["今天天气", long_line, ascii_line, "北京大学"]
    (tmp_path / "c.txt").write_text("\ufeff" + "\n".join(lines) + "\n\n研究\n", encoding="utf-8")
    (tmp_path / "c.txt.gz").write_bytes(gzip.compress((tmp_path / "c.txt").read_bytes()))
    want = tokenizer.batch_ids(lines, split_special_tokens=True)
    for name in ("c.txt", "c.txt.gz"):
        corpus = prepare_corpus([tmp_path / name], tokenizer, tmp_path / name.replace(".", "-"), max_line_chars=50)
        sentences = corpus.sentences(0)
        assert np.concatenate(sentences).tolist() == [i for ids in want for i in ids]
        assert sentences[0].tolist() == want[0] and sentences[-1].tolist() == want[-1]
        lengths = [len(s) for s in sentences[1:-1]]
        assert len(lengths) > (len(long_line) + len(ascii_line)) // 50 and max(lengths) <= 50
        assert corpus.num_documents == 2 and corpus.meta["counts"]["lines"] == 6
        assert corpus.meta["max_line_chars"] == 50
    # A long line holding only whitespace is still a document break; a long run without a place to cut is
    # cut at the limit (WordPiece makes such a run one [UNK] anyway).
    (tmp_path / "b.txt").write_text("今天\n" + "\u3000 " * 200 + "\n很好\n" + "x" * 120 + "\n", encoding="utf-8")
    corpus = prepare_corpus([tmp_path / "b.txt"], tokenizer, tmp_path / "b", max_line_chars=50)
    assert corpus.num_documents == 2 and corpus.meta["counts"]["lines"] == 4
    assert [s.tolist() for s in corpus.sentences(1)] == [*tokenizer.batch_ids(["很好"]), *[[tokenizer.unk_token_id]] * 3]
    with pytest.raises(UsageError, match="max_line_chars"):
        prepare_corpus([tmp_path / "b.txt"], tokenizer, tmp_path / "b", max_line_chars=0)


def test_bytes_that_are_not_utf8_in_a_long_line_name_line_and_column(tmp_path: Path, tokenizer: Tokenizer) -> None:
    bad = "今天\n".encode() + "很好".encode() * 1000 + b"\xff" + "天".encode() * 100 + b"\n"  # read in 2 pieces
    (tmp_path / "bad.txt").write_bytes(bad)
    with pytest.raises(DataError, match=r"bad\.txt:2: not UTF-8 text \(byte 0xff at column 6001 of the line\)"):
        prepare_corpus([tmp_path / "bad.txt"], tokenizer, tmp_path / "tok", max_line_chars=40)
    (tmp_path / "cut.txt").write_bytes("很好".encode() * 30 + "天".encode()[:2])  # ends inside a character
    with pytest.raises(DataError, match=r"cut\.txt:1: not UTF-8 text \(byte 0xe5 at column 181 of the line\)"):
        prepare_corpus([tmp_path / "cut.txt"], tokenizer, tmp_path / "tok", max_line_chars=40)


_HOSTILE = """
import gzip, json, resource, sys
from pathlib import Path
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import prepare_corpus

work = Path(sys.argv[1])
tokenizer = Tokenizer.from_file(work / "vocab.txt")
prepare_corpus([work / "warm.txt"], tokenizer, work / "warm", batch_chars=4096, max_line_chars=4096)
vm = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (1 << 30), resource.RLIM_INFINITY))  # a safety net: +1 GiB
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
counts = {}
for name in sys.argv[2:]:
    counts[name] = prepare_corpus([work / name], tokenizer, work / (name + ".tok"), batch_chars=1 << 16,
                                  max_line_chars=4096).meta["counts"]
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"grown": grown, "counts": counts}))
"""


def test_memory_of_hostile_lines_is_bounded(tmp_path: Path) -> None:
    """One line of 512Ki CJK characters (no newline), and a .gz of 64 MiB holding a single line (scaled down
    from the 6 GiB of issue 17), tokenize in bounded memory: the peak grows by what a piece and a batch need
    (about 15 MB), not by the line (about 350 MB for the first; the second aborts the Rust tokenizer)."""
    write_vocab(tmp_path / "vocab.txt")
    write_corpus(tmp_path / "warm.txt", 5)
    rng = random.Random(1)
    (tmp_path / "line.txt").write_text("".join(rng.choice(CHARS) for _ in range(1 << 19)), encoding="utf-8")
    with gzip.open(tmp_path / "bomb.txt.gz", "wb", compresslevel=1) as f:
        f.write("今天".encode())
        for _ in range(64):
            f.write(b" " * (1 << 20))
        f.write("很好".encode())
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "MALLOC_ARENA_MAX": "2",
           "RAYON_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", _HOSTILE, str(tmp_path), "line.txt", "bomb.txt.gz"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout)
    assert result["counts"]["line.txt"]["tokens"] == 1 << 19
    assert result["counts"]["bomb.txt.gz"]["tokens"] == 4 and result["counts"]["bomb.txt.gz"]["lines"] == 1
    assert result["grown"] < 100 << 20, result


_BLOCKED_BUILD = """
import sys, time
from pathlib import Path
from zoo.tokenizer import Tokenizer
from zoo.training.corpus import prepare_corpus

work = Path(sys.argv[1])

def stop(done, total):
    print("building", flush=True)
    time.sleep(120)

prepare_corpus([work / "c.txt"], Tokenizer.from_file(work / "vocab.txt"), work / "data" / sys.argv[2],
               batch_chars=50, on_progress=stop)
"""


def test_staging_of_a_killed_build_is_removed_by_the_next_one(tmp_path: Path, tokenizer: Tokenizer) -> None:
    """``kill -9`` while tokenizing leaves a staging directory; the next prepare_corpus in that folder removes
    it (its owner is gone) but leaves the staging of a build still running, and of other machines, alone."""
    write_vocab(tmp_path / "vocab.txt")
    write_corpus(tmp_path / "c.txt", 20)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    data = tmp_path / "data"

    def start(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", _BLOCKED_BUILD, str(tmp_path), name], env=env,
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None and proc.stdout.readline() == "building\n"
        return proc

    killed, running = start("corpus-old"), start("corpus-a")
    try:
        killed.send_signal(signal.SIGKILL)
        killed.wait(30)
        left = sorted(p.name for p in data.iterdir())
        assert len(left) == 2 and all(".staging-" in name for name in left)
        foreign = data / ".corpus-a.staging-another-host-1-0123456789ab"
        foreign.mkdir()
        corpus = prepare_corpus([tmp_path / "c.txt"], tokenizer, data / "corpus-a")
        assert corpus.num_documents == 20
        remaining = sorted(p.name for p in data.iterdir())
        assert remaining == sorted(["corpus-a", foreign.name, *(n for n in left if n.startswith(".corpus-a."))])
        assert not any(n.startswith(".corpus-old.") for n in remaining)
    finally:
        running.kill()
        running.wait(30)
    prepare_corpus([tmp_path / "c.txt"], tokenizer, data / "corpus-a")  # reused; the dead one's staging goes
    assert sorted(p.name for p in data.iterdir()) == sorted(["corpus-a", foreign.name])
