"""Issue 9, hostile and broken inputs: manifests (5, 6), TF indexes (7), pickles (11), tokenizer calls (17) and
the smaller items of 19 (a [MASK] past the limit, top-k past the vocabulary, one size unit, CLI-worded hints,
one warning per event)."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from support.cli import run
from support.damage import flip
from support.fixtures import checkpoint_files, make_zip, source, write_manifest, zoo_env  # noqa: F401
from support.models import FIXTURE

import zoo
from zoo import cache
from zoo.cli import main
from zoo.errors import CheckpointError, ManifestError
from zoo.registry import builtin_manifest_dir

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TF = Path(__file__).parent / "fixtures" / "tf"


# ----------------------------------------------------------------------------------- 5, 6: manifests
def billion_laughs(levels: int = 9, width: int = 9) -> str:
    lines = ['lol: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    prev = "a"
    for level in range(1, levels):
        name = f"l{level}"
        lines.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * width) + "]")
        prev = name
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(("levels", "width"), [(9, 9), (6, 10), (3, 60)], ids=["classic", "few-aliases", "wide"])
def test_a_billion_laughs_manifest_is_refused_in_milliseconds(tmp_path: Path, capsys, levels: int,
                                                             width: int) -> None:
    laughs = tmp_path / "laughs.yaml"
    laughs.write_text(billion_laughs(levels, width), encoding="utf-8")
    assert len(laughs.read_bytes()) < 1500
    started = time.monotonic()
    code, out, err = run(capsys, "info", "albert_base_zh", "--json", "--manifests", str(tmp_path))
    assert time.monotonic() - started < 2
    assert code == 0 and json.loads(out)["name"] == "albert_base_zh"  # other models keep working
    assert f"skipping user manifest {laughs}" in err and "YAML aliases" in err and len(err) < 1000
    code, _, err = run(capsys, "info", "laughs", "--manifests", str(tmp_path))
    assert code == 4 and f"{laughs}: YAML aliases expand to more than" in err and len(err) < 1000


def test_values_in_manifest_errors_are_cut(tmp_path: Path, capsys) -> None:
    data = yaml.safe_load((builtin_manifest_dir() / "albert_base_zh.yaml").read_text(encoding="utf-8"))
    data.update(name="huge", aliases=[])
    for url in ("ftp://" + "y" * 1_000, "ftp://" + "y" * 1_000_000):  # a bad value; a bad and overlong one
        data["sources"][0]["url"] = url
        (tmp_path / "huge.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        code, _, err = run(capsys, "info", "huge", "--manifests", str(tmp_path))
        assert code == 4 and "sources[0].url" in err and "y" * 200 not in err and len(err) < 2000


@pytest.mark.parametrize("content", [b"name: caf\xe9\nfamily: bert\n", b"\xff\xfe\x00n\x00a", b"{{{{: [\n",
                                     b"- just\n- a list\n"], ids=["latin-1", "utf-16", "not yaml", "not a mapping"])
def test_a_broken_user_manifest_is_named_and_sets_only_itself_aside(tmp_path: Path, capsys, monkeypatch,
                                                                   content: bytes) -> None:
    bad = tmp_path / "mine.yaml"
    bad.write_bytes(content)
    code, out, err = run(capsys, "info", "albert_large_zh", "--json", "--manifests", str(tmp_path))
    assert code == 0 and json.loads(out)["name"] == "albert_large_zh"
    assert f"skipping user manifest {bad}" in err and "Traceback" not in err
    code, out, err = run(capsys, "list", "--manifests", str(tmp_path))
    assert code == 0 and "albert_large_zh" in out
    code, _, err = run(capsys, "info", "mine", "--manifests", str(tmp_path))
    assert code == 4 and str(bad) in err and "UnicodeDecodeError" not in err
    from zoo.registry import clear_cache

    monkeypatch.setenv("ZOO_MANIFEST_PATH", str(tmp_path))
    clear_cache()
    assert zoo.get_manifest("albert_large_zh").name == "albert_large_zh"
    with pytest.raises(ManifestError, match=re.escape(str(bad))):
        zoo.get_manifest("mine")


# ------------------------------------------------------------------------------------ 7: TF index
def test_an_index_claiming_a_billion_shards_fails_fast(tmp_path: Path, capsys) -> None:
    from zoo.tf.table import Table
    from zoo.tf.writer import header_proto, table_bytes

    release = tmp_path / "bert"
    shutil.copytree(FIXTURE, release)
    index = release / "bert_model.ckpt.index"
    entries = [(key, header_proto(num_shards=10 ** 9) if key == b"" else value) for key, value in Table(index)]
    index.write_bytes(table_bytes(entries))
    started = time.monotonic()
    with pytest.raises(CheckpointError, match="the header says 1,000,000,000 data shards, but 1 data file"):
        zoo.load(release, device="cpu", progress=False)
    code, _, err = run(capsys, "convert", str(release), str(tmp_path / "out"))
    assert code == 8 and "1,000,000,000 data shards" in err
    code, _, err = run(capsys, "ckpt", "ls", str(release))
    assert code == 8 and time.monotonic() - started < 5


# --------------------------------------------------------------------------------------- 11: pickles
class Payload:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_with_code_is_refused_without_torch_advice_to_run_it(zoo_env: Path, tmp_path: Path, capsys) -> None:
    buf = io.BytesIO()
    torch.save({"bert.embeddings.word_embeddings.weight": torch.zeros(97, 32), "evil": Payload()}, buf)
    archive = tmp_path / "hf.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/pytorch_model.bin", buf.getvalue())
        zf.writestr("m/vocab.txt", (FIXTURE / "vocab.txt").read_text(encoding="utf-8"))
    entry = {**source(archive.as_uri()), "format": "pytorch", "checkpoint": "m/pytorch_model.bin",
             "vocab": "m/vocab.txt"}
    del entry["scheme"]
    write_manifest(zoo_env, "pickled", [entry])
    with pytest.raises(CheckpointError) as info:
        zoo.load("pickled", device="cpu", progress=False)
    text = str(info.value)
    assert "objects other than tensors (it references print)" in text and "does not unpickle" in text
    assert "weights_only" not in text and "trust" not in text and "\x1b[" not in text
    code, _, err = run(capsys, "run", "pickled", "[MASK]", "-q")
    assert code == 8 and "weights_only" not in err and "add_safe_globals" not in err


# ------------------------------------------------------------------------------------- 17: tokenizer
TEXTS = ["今天天气很好。我们去公园玩吧！", "北京是中国的首都", "the quick brown fox jumps over the lazy dog"]
LONG = "今天天气很好，我们去公园玩吧！" * 20 + "北京是中国的首都。" * 10


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    chars = sorted({c for text in [*TEXTS, LONG] for c in text.lower() if not c.isspace()})
    words = sorted({w for text in TEXTS for w in text.split() if w.isascii()})
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *words, "##s"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(dict.fromkeys(tokens)) + "\n", encoding="utf-8")
    return path


def test_a_truncating_call_leaves_no_trace_on_later_calls(vocab_file: Path) -> None:
    from zoo.tokenizer import Tokenizer

    ours = Tokenizer.from_file(vocab_file)
    theirs = transformers.BertTokenizer(vocab=str(vocab_file), do_lower_case=True)
    full = theirs(LONG)["input_ids"]
    assert len(full) > 200
    got = ours([LONG, *TEXTS], truncation=True, max_length=64, padding=True)
    assert got["input_ids"] == theirs([LONG, *TEXTS], truncation=True, max_length=64, padding=True)["input_ids"]
    assert len(got["input_ids"][0]) == 64
    assert ours.encode(LONG) == full == theirs.encode(LONG)  # not cut to 64 by the call before
    assert ours(LONG)["input_ids"] == full
    assert ours([LONG, "今天"])["input_ids"] == theirs([LONG, "今天"])["input_ids"]  # no padding left either
    assert ours(LONG, truncation=True)["input_ids"] == theirs(LONG, truncation=True, max_length=512)["input_ids"]
    assert ours(LONG, truncation=True, max_length=16)["input_ids"] == \
        theirs(LONG, truncation=True, max_length=16)["input_ids"]
    assert ours.encode(LONG) == full


def test_concurrent_calls_with_different_options_are_independent(vocab_file: Path) -> None:
    from zoo.tokenizer import Tokenizer

    ours = Tokenizer.from_file(vocab_file)
    calls = [{"truncation": t, "max_length": m, "padding": p} for t in (False, True) for m in (8, 16, 64, None)
             for p in (False, True, "max_length") if not (p == "max_length" and m is None)]
    batch = [LONG, *TEXTS]
    want = [Tokenizer.from_file(vocab_file)(batch, **kw) for kw in calls]  # a fresh tokenizer per call
    start = threading.Barrier(8)

    def worker(seed: int) -> list[bool]:
        start.wait()
        order = [(seed * 7 + i * 5) % len(calls) for i in range(60)]
        return [ours(batch, **calls[i]) == want[i] for i in order]

    with ThreadPoolExecutor(8) as pool:
        results = [ok for chunk in pool.map(worker, range(8)) for ok in chunk]
    assert len(results) == 480 and all(results)


# ------------------------------------------------------------------------------------------- 19: smaller
@pytest.fixture
def converted(tmp_path: Path) -> Path:
    """A converted directory of the tiny BERT (64 positions, MLM head)."""
    out = tmp_path / "converted"
    assert main(["convert", str(FIXTURE), str(out)]) == 0
    return out


def test_a_mask_past_the_truncation_point_says_so(converted: Path, capsys) -> None:
    text = "天" * 70 + "[MASK]"
    code, _, err = run(capsys, "run", str(converted), text, "-q")
    assert code == 2 and "beyond the model's 64 positions" in err and "no [MASK]" not in err
    code, out, err = run(capsys, "embed", str(converted), "天" * 70, "今天", "-q", "--json")
    assert code == 0 and len(json.loads(out)) == 2
    assert "truncated a text of 72 tokens to the model's 64 positions" in err


def test_top_k_past_a_vocabulary_with_a_repeated_line(converted: Path, capsys) -> None:
    vocab = (converted / "vocab.txt").read_text(encoding="utf-8").splitlines()
    vocab[-1] = vocab[5]  # the last line repeats an earlier token (as Google's vocab_chinese.txt does)
    (converted / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    (converted / "receipt.json").unlink()  # edited by hand: no longer what zoo wrote (which a load would refuse)
    code, out, err = run(capsys, "run", str(converted), "今天[MASK]", "--top-k", "100000", "--json", "-q")
    assert code == 0, err
    ranked = json.loads(out)[0]["masks"][0]
    assert len(ranked) == len(vocab) - 1 and len({r["id"] for r in ranked}) == len(ranked)
    assert not any(r["token"].startswith("[zoo-") for r in ranked)
    assert [r["score"] for r in ranked] == sorted((r["score"] for r in ranked), reverse=True)
    code, out, err = run(capsys, "run", str(TF / "albert_google"), "今天[MASK]", "--top-k", "100000", "--json", "-q")
    assert code == 0, err


def test_cli_hints_speak_cli(tmp_path: Path, capsys) -> None:
    out = tmp_path / "headless"
    assert main(["convert", str(TF / "bert_fp16_headless"), str(out)]) == 0
    code, _, err = run(capsys, "run", str(out), "今天[MASK]", "-q")
    assert code == 2 and "no MLM head" in err
    assert "heads=" not in err and "zoo.load" not in err and "weights_only" not in err


SIZE = re.compile(r"\d\s?([kKMGT]i?B)\b")  # 5 MB, 1.5KiB, 524kB/s (parameter counts like 10.5M are no sizes)


def test_sizes_are_shown_in_one_unit(zoo_env: Path, tmp_path: Path, capsys) -> None:
    from zoo._fs import human_size
    from zoo.progress import Bars, ProgressEvent

    assert [human_size(n) for n in (512, 1536, 5 << 20, 3 << 30)] == ["512 B", "1.5 KiB", "5.0 MiB", "3.0 GiB"]
    archive = tmp_path / "m.zip"
    archive.write_bytes(make_zip(checkpoint_files(300_000)))
    write_manifest(zoo_env, "tst", [source(archive.as_uri())])
    shown = []
    shown.append(run(capsys, "pull", "tst")[2])
    shown.append(run(capsys, "cache", "ls")[1])
    shown.append(run(capsys, "list")[1])
    for plain in (True, False):
        stream = io.StringIO()
        bars = Bars(stream, plain=plain, every=0)
        for done in (0, 3 << 20, 10 << 20):
            bars(ProgressEvent("download", "m.zip", done=done, total=10 << 20))
        bars.close()
        shown.append(stream.getvalue())
    units = {m.group(1) for text in shown for m in SIZE.finditer(text)}
    assert units and units <= {"KiB", "MiB", "GiB"}, units


def test_a_damaged_snapshot_is_reported_once(zoo_env: Path, tmp_path: Path, capsys) -> None:
    archive = tmp_path / "m.zip"
    archive.write_bytes(make_zip(checkpoint_files(100_000)))
    write_manifest(zoo_env, "tst", [source(archive.as_uri())])
    assert run(capsys, "pull", "tst", "-q")[0] == 0
    snap = cache.snapshots("tst")[0]
    flip(snap.path / "m" / "vocab.txt", 0, keep_stamp=False)
    code, out, err = run(capsys, "pull", "tst", "-q")
    assert code == 0 and (Path(out.strip()) / "m" / "vocab.txt").read_bytes().startswith(b"[PAD]")
    assert err.count("vocab.txt changed") == 1 and err.count("rebuilding the snapshot") == 1, err
