"""Plain-text pretraining corpora, tokenized once into memory-mapped arrays.

Input follows upstream ``create_pretraining_data.py`` (one sentence per line, a blank line between documents,
UTF-8, ``.gz`` too), read as raw text: ``[MASK]`` written in it is characters, never a special id. Corpora may be
larger than memory, so :func:`prepare_corpus` streams: lines — long ones read in pieces and cut where WordPiece
starts a word anyway, so memory is that of a piece — are tokenized in batches and appended to ``.npy`` arrays
(token ids, word starts, sentence and document offsets) in a staging directory renamed into place when complete.
:class:`TokenizedCorpus` maps them read-only, so every process of a run shares them. They are trusted only as
written: ``corpus.json`` records each array's sha256 and stamp; opening re-hashes what moved and checks ids and
offsets. Words for whole-word and n-gram masking are WordPiece's (a token and its ``##`` pieces) or jieba's.
docs/pretraining.md ("The corpus") gives every rule.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import gzip
import hashlib
import io
import itertools
import json
import logging
import re
import struct
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO, Literal

import numpy as np

from zoo._fs import disk_full_is_an_error, remove_stale_staging, sha256_file, staged_directory, write_json_atomic
from zoo.cache import FolderStamp
from zoo.errors import DataError, NotFoundError, UsageError, first_line
from zoo.tokenizer import Tokenizer

logger = logging.getLogger("zoo.training")

WordMode = Literal["wordpiece", "jieba"]
WORD_MODES: tuple[str, ...] = ("wordpiece", "jieba")
#: Called with (bytes read so far, total bytes) of the corpus files as they are read (compressed bytes for .gz).
ProgressCallback = Callable[[int, int], None]

FORMAT = "zoo-pretraining-corpus"
FORMAT_VERSION = 3  # 2: special-token strings in the text are text; 3: the arrays' sha256 and stamps
META_FILE = "corpus.json"
ARRAY_FILES: dict[str, str] = {
    "tokens": "tokens.npy",
    "word_starts": "word_starts.npy",
    "sentence_offsets": "sentence_offsets.npy",
    "document_offsets": "document_offsets.npy",
}
#: Default amount of text (characters) handed to the tokenizer per ``batch_ids`` call.
DEFAULT_BATCH_CHARS = 1 << 20
#: Default longest line read as one sentence; longer lines are cut into sentences of at most this many characters.
MAX_LINE_CHARS = 1 << 16

_READ_BLOCK = 1 << 20
_NPY_HEADER_SIZE = 128  # fixed, so the header can be rewritten with the final length after streaming
_UTF8_HINT = "the corpus must be UTF-8; convert it first, e.g. `iconv -f GB18030 -t UTF-8 in.txt > out.txt`"
_FORMAT_HINT = "one sentence per line, a blank line between documents, UTF-8 (optionally .gz)"
#: The last place in a long line after which it may be cut without changing its tokens: whitespace, ASCII
#: punctuation (BERT's punctuation), common CJK punctuation, CJK characters (each one a word of its own).
_LAST_CUT = re.compile("(?s).*[\t \u00a0\u3000!-/:-@\\[-`{-~，。！？；：、（）《》〈〉「」『』【】“”‘’…—"
                       "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002a6df]")


# ------------------------------------------------------------------------------------------------ the corpus
class TokenizedCorpus:
    """A tokenized corpus directory, memory-mapped read-only (see the module docstring for the layout).

    The arrays are public: ``tokens`` (int32), ``word_starts`` (bool), ``sentence_offsets`` and
    ``document_offsets`` (int64, each one longer than its count, starting at 0). ``meta`` is the parsed
    ``corpus.json``.
    """

    def __init__(self, directory: Path, meta: dict[str, Any], tokens: np.ndarray, word_starts: np.ndarray,
                 sentence_offsets: np.ndarray, document_offsets: np.ndarray) -> None:
        self.directory = directory
        self.meta = meta
        self.tokens = tokens
        self.word_starts = word_starts
        self.sentence_offsets = sentence_offsets
        self.document_offsets = document_offsets

    @classmethod
    def open(cls, directory: str | Path, *, refresh: bool = False) -> TokenizedCorpus:
        """Map a directory written by :func:`prepare_corpus`, checked (module docstring); DataError naming the file
        if it is incomplete or damaged. ``refresh``: record the stamps of files re-hashed and found intact (after a
        copy, say), so the next open hashes nothing."""
        directory = Path(directory)
        meta_path = directory / META_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise NotFoundError(f"{directory}: not a tokenized corpus (no {META_FILE})",
                                hint="build it with prepare_corpus") from None
        except (OSError, ValueError) as exc:
            raise DataError(f"{meta_path}: unreadable ({first_line(exc)})", hint=_rebuild_hint(directory)) from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != FORMAT_VERSION:
            raise DataError(f"{meta_path}: not a {FORMAT} version {FORMAT_VERSION} record",
                            hint=_rebuild_hint(directory))
        moved = _verify_arrays(directory, meta)
        arrays: dict[str, np.ndarray] = {}
        for key, name in ARRAY_FILES.items():
            try:
                # A plain ndarray view of the map: slicing it is cheaper than slicing np.memmap.
                arrays[key] = np.load(directory / name, mmap_mode="r", allow_pickle=False).view(np.ndarray)
            except (OSError, ValueError) as exc:
                raise DataError(f"{directory / name}: damaged tokenized corpus: unreadable ({first_line(exc)})",
                                hint=_rebuild_hint(directory)) from None
        corpus = cls(directory, meta, arrays["tokens"], arrays["word_starts"], arrays["sentence_offsets"],
                     arrays["document_offsets"])
        corpus._check()
        corpus._check_values()
        if refresh and moved:
            for name, stamp in moved.items():
                meta["arrays"][name]["stamp"] = list(dataclasses.astuple(stamp))
            write_json_atomic(meta_path, meta, mode=0o666)  # the folder's other files: as the umask says
        return corpus

    def _check(self) -> None:
        counts = self.meta.get("counts", {})
        sent, docs = self.sentence_offsets, self.document_offsets
        problems = []
        if self.tokens.dtype != np.int32 or self.word_starts.dtype != np.bool_:
            problems.append("unexpected array types")
        if self.tokens.shape != self.word_starts.shape:
            problems.append("tokens and word_starts differ in length")
        if sent.ndim != 1 or docs.ndim != 1 or len(sent) < 2 or len(docs) < 2:
            problems.append("offsets are empty")
        elif sent[0] != 0 or sent[-1] != len(self.tokens) or docs[0] != 0 or docs[-1] != len(sent) - 1:
            problems.append("offsets do not span the arrays")
        if (counts.get("tokens"), counts.get("sentences"), counts.get("documents")) != (
                self.num_tokens, self.num_sentences, self.num_documents):
            problems.append(f"counts disagree with {META_FILE}")
        if problems:
            raise DataError(f"{self.directory}: damaged tokenized corpus: {'; '.join(problems)}",
                            hint=_rebuild_hint(self.directory))

    def _check_values(self) -> None:
        """Every id inside the vocabulary, offsets strictly increasing (no sentence or document is empty): what
        the sampler and the model index with. numpy over the memory maps, a block of memory at a time."""
        vocab_size = (self.meta.get("tokenizer") or {}).get("vocab_size")
        low, high = (int(self.tokens.min()), int(self.tokens.max())) if self.num_tokens else (0, 0)
        name, problem = "", None
        if not isinstance(vocab_size, int):
            name, problem = META_FILE, "it records no vocabulary size"
        elif low < 0 or high >= vocab_size:
            name = ARRAY_FILES["tokens"]
            problem = f"token ids {low}..{high} lie outside the vocabulary (0..{vocab_size - 1})"
        else:
            for key in ("sentence_offsets", "document_offsets"):
                if not _increasing(getattr(self, key)):
                    name, problem = ARRAY_FILES[key], "its offsets do not increase"
                    break
        if problem is not None:
            raise DataError(f"{self.directory / name}: damaged tokenized corpus: {problem}",
                            hint=_rebuild_hint(self.directory))

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def num_sentences(self) -> int:
        return int(self.sentence_offsets.shape[0]) - 1

    @property
    def num_documents(self) -> int:
        return int(self.document_offsets.shape[0]) - 1

    @property
    def words(self) -> WordMode:
        """How ``word_starts`` was computed: ``"wordpiece"`` or ``"jieba"``."""
        mode: WordMode = self.meta["words"]["mode"]
        return mode

    def document_token_range(self, document: int) -> tuple[int, int]:
        """``(start, stop)`` of a document in ``tokens`` (a document's sentences are stored back to back)."""
        s0, s1 = int(self.document_offsets[document]), int(self.document_offsets[document + 1])
        return int(self.sentence_offsets[s0]), int(self.sentence_offsets[s1])

    def document_of_token(self, position: int) -> int:
        """Index of the document holding the token at ``position``."""
        sentence = int(np.searchsorted(self.sentence_offsets, position, side="right")) - 1
        return int(np.searchsorted(self.document_offsets, sentence, side="right")) - 1

    def sentences(self, document: int) -> list[np.ndarray]:
        """The token ids of a document's sentences (for inspection and tests; training uses the offsets)."""
        s0, s1 = int(self.document_offsets[document]), int(self.document_offsets[document + 1])
        offsets = self.sentence_offsets[s0:s1 + 1]
        return [self.tokens[offsets[i]:offsets[i + 1]] for i in range(s1 - s0)]

    def __repr__(self) -> str:
        return (f"TokenizedCorpus({str(self.directory)!r}, documents={self.num_documents}, "
                f"sentences={self.num_sentences}, tokens={self.num_tokens}, words={self.words!r})")


def _rebuild_hint(directory: Path) -> str:
    return f"delete {directory} to rebuild it: the next run tokenizes the corpus again"


def _increasing(values: np.ndarray, block: int = 1 << 22) -> bool:
    """Whether ``values`` strictly increase, read a block at a time (a memory map of any size costs one block)."""
    for lo in range(0, max(len(values) - 1, 0), block):
        part = np.asarray(values[lo:lo + block + 1])
        if not bool((part[1:] > part[:-1]).all()):
            return False
    return True


def _array_records(directory: Path) -> dict[str, dict[str, Any]]:
    """sha256, size and stamp of each array just written (what :func:`_verify_arrays` compares with)."""
    records = {}
    for name in ARRAY_FILES.values():
        digest, size = sha256_file(directory / name)
        records[name] = {"sha256": digest, "size": size,
                         "stamp": list(dataclasses.astuple(FolderStamp.of(directory / name)))}
    return records


def verify_corpus(directory: Path) -> int:
    """``zoo verify`` of a run's tokenized corpus: every array re-hashed against ``corpus.json``, whatever its
    stamp (a DataError naming the damaged file). Returns how many files were hashed."""
    meta_path = directory / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{meta_path}: damaged tokenized corpus: {first_line(exc)}",
                        hint=_rebuild_hint(directory)) from None
    _verify_arrays(directory, meta if isinstance(meta, dict) else {}, rehash=True)
    return len(ARRAY_FILES)


def _verify_arrays(directory: Path, meta: dict[str, Any], *, rehash: bool = False) -> dict[str, FolderStamp]:
    """Each array against its record in ``corpus.json``: one ``stat`` when its stamp is the one recorded (unless
    ``rehash``), else re-hashed. Returns the new stamps of files whose stamp moved but whose content is intact."""
    records = meta.get("arrays")
    moved: dict[str, FolderStamp] = {}
    for name in ARRAY_FILES.values():
        path = directory / name
        record = records.get(name) if isinstance(records, dict) else None
        try:
            if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
                raise ValueError(f"{META_FILE} records no sha256 for it")
            recorded = FolderStamp(*(int(x) for x in record["stamp"]))
            stamp = FolderStamp.of(path)
            if stamp == recorded and not rehash:
                continue
            if stamp.size != record["size"] or sha256_file(path)[0] != record["sha256"]:
                raise ValueError("it changed since it was written (its sha256 is not the one recorded)")
            if stamp != recorded:
                moved[name] = stamp
        except FileNotFoundError:
            raise DataError(f"{path}: damaged tokenized corpus: the file is missing",
                            hint=_rebuild_hint(directory)) from None
        except (OSError, ValueError, TypeError, KeyError) as exc:
            raise DataError(f"{path}: damaged tokenized corpus: {first_line(exc)}",
                            hint=_rebuild_hint(directory)) from None
    return moved


# ------------------------------------------------------------------------------------------ build or reuse
def prepare_corpus(files: Sequence[str | Path], tokenizer: Tokenizer, directory: str | Path, *,
                   words: WordMode = "wordpiece", batch_chars: int = DEFAULT_BATCH_CHARS,
                   max_line_chars: int = MAX_LINE_CHARS, on_progress: ProgressCallback | None = None,
                   rebuild: bool = False, sha256: Sequence[str] | None = None) -> TokenizedCorpus:
    """Tokenize ``files`` (in this order) into ``directory``, or reuse it when it was built from the same input.

    Reuse needs the same files in the same order with the same sizes and sha256 (re-hashed here, about a
    second per GB), the same vocabulary and tokenizer options, the same ``words`` mode (and jieba version),
    ``max_line_chars`` and format version; anything else rebuilds, and ``rebuild=True`` always does. Building
    writes to a sibling staging directory renamed into place at the end, so an interrupted build never leaves a
    directory that looks complete; the staging a killed build left behind in that folder is removed here, once
    its process is gone. Several processes building at once are safe (each installs an identical result with a
    rename) but do the work several times: in a distributed run, let one rank build and the others
    :meth:`TokenizedCorpus.open` the directory after a barrier.

    ``sha256``: the files' digests when the caller just computed them (``zoo pretrain`` hashes its inputs for
    ``--resume``): reuse compares those instead of reading the files again.
    ``batch_chars`` is how much text goes to the tokenizer at once (the output does not depend on it).
    ``max_line_chars``: longer lines are cut into sentences of at most this many characters (module docstring).
    ``on_progress(bytes_read, bytes_total)`` is called as the files are read. Raises DataError for text that
    is not UTF-8 (naming file and line), damaged gzip data or a corpus without a single token,
    NotFoundError for a missing file and UsageError for bad options.
    """
    paths = _check_files(files)
    if words not in WORD_MODES:
        raise UsageError(f"words={words!r} is not a word mode", hint=f"use one of {', '.join(WORD_MODES)}")
    if batch_chars < 1:
        raise UsageError(f"batch_chars must be positive, got {batch_chars}")
    if max_line_chars < 1:
        raise UsageError(f"max_line_chars must be positive, got {max_line_chars}")
    if sha256 is not None and len(sha256) != len(paths):
        raise UsageError(f"sha256 holds {len(sha256)} digests for {len(paths)} files")
    directory = Path(directory)
    _remove_dead_staging(directory.parent)
    identity = {**_identity(tokenizer, words), "max_line_chars": max_line_chars}
    if not rebuild:
        existing = _reusable(directory, paths, identity, sha256)
        if existing is not None:
            return existing
    return _build(paths, tokenizer, directory, identity, words, _Reading(batch_chars, max_line_chars), on_progress)


def _check_files(files: Sequence[str | Path]) -> list[Path]:
    if isinstance(files, (str, Path)):
        files = [files]
    paths = [Path(f) for f in files]
    if not paths:
        raise UsageError("no corpus files given", hint="pass one or more text files (" + _FORMAT_HINT + ")")
    for path in paths:
        if not path.exists():
            raise NotFoundError(f"{path}: corpus file does not exist")
        if not path.is_file():
            raise NotFoundError(f"{path}: is not a regular file", hint="pass corpus files, not directories")
    return paths


def _identity(tokenizer: Tokenizer, words: str) -> dict[str, Any]:
    """Everything besides the files' content that the arrays depend on."""
    vocab_text = "".join(token + "\n" for token in tokenizer.tokens)
    word_info: dict[str, Any] = {"mode": words}
    if words == "jieba":
        word_info["jieba_version"] = _import_jieba().__version__
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        # the sha256 of the vocab in id order, one token a line: that of a plain one-column vocab.txt
        "tokenizer": {"vocab_sha256": hashlib.sha256(vocab_text.encode("utf-8")).hexdigest(),
                      "vocab_size": tokenizer.vocab_size, "lowercase": tokenizer.lowercase,
                      "strip_accents": tokenizer.strip_accents},
        "words": word_info,
    }


def _remove_dead_staging(folder: Path) -> None:
    """Remove the staging directories in ``folder`` whose process is gone: a build killed with -9 cannot clean up
    after itself. Those of a running build, or of another machine, stay."""
    for path in remove_stale_staging(folder):
        logger.info("%s: removed what an interrupted build left behind (its process is gone)", path)


def _reusable(directory: Path, paths: list[Path], identity: dict[str, Any],
              sha256: Sequence[str] | None) -> TokenizedCorpus | None:
    """The existing corpus at ``directory`` when it matches this input; None (with a log line) otherwise."""
    meta_path = directory / META_FILE
    if not meta_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        logger.warning("%s: unreadable; rebuilding the tokenized corpus", meta_path)
        return None
    reason = _mismatch(meta, paths, identity, sha256)
    if reason is not None:
        logger.info("%s: rebuilding the tokenized corpus: %s", directory, reason)
        return None
    corpus = TokenizedCorpus.open(directory, refresh=True)  # damage is an error: a file rotted, or was edited
    logger.info("%s: reusing the tokenized corpus (%d documents, %d tokens)", directory, corpus.num_documents,
                corpus.num_tokens)
    return corpus


def _mismatch(meta: Any, paths: list[Path], identity: dict[str, Any], sha256: Sequence[str] | None) -> str | None:
    if not isinstance(meta, dict):
        return "unreadable record"
    for key, want in identity.items():
        if meta.get(key) != want:
            return f"{key} changed ({meta.get(key)!r} -> {want!r})"
    recorded = meta.get("files")
    if not isinstance(recorded, list) or len(recorded) != len(paths):
        return "the list of corpus files changed"
    for path, rec in zip(paths, recorded):
        if not isinstance(rec, dict) or rec.get("size") != path.stat().st_size:
            return f"{path} changed (size)"
    for i, (path, rec) in enumerate(zip(paths, recorded)):
        if rec.get("sha256") != (sha256[i] if sha256 is not None else sha256_file(path)[0]):
            return f"{path} changed (sha256)"
    return None


@dataclasses.dataclass(frozen=True)
class _Reading:
    """How the text is read and handed to the tokenizer (see :func:`prepare_corpus`)."""

    batch_chars: int
    max_line_chars: int


def _build(paths: list[Path], tokenizer: Tokenizer, directory: Path, identity: dict[str, Any], words: str,
           reading: _Reading, on_progress: ProgressCallback | None) -> TokenizedCorpus:
    """Tokenize into a staging sibling, then replace ``directory`` with it in one rename. Several processes
    building at once each install an identical result."""
    with disk_full_is_an_error(f"writing the tokenized corpus in {directory.parent}",
                               hint="free space there, or put the tokenized corpus on another disk "
                                    "(it needs about 5 bytes per token)"), \
            staged_directory(directory, replace=True) as staging, \
            _CorpusWriter(staging, tokenizer, words, reading, paths, on_progress) as writer:
        for path in paths:
            writer.add_file(path)
        counts, files = writer.finish()
        meta = {**identity, "files": files, "counts": counts, "arrays": _array_records(staging)}
        (staging / META_FILE).write_text(json.dumps(meta, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    corpus = TokenizedCorpus.open(directory)
    logger.info("%s: tokenized %d documents, %d sentences, %d tokens", directory, corpus.num_documents,
                corpus.num_sentences, corpus.num_tokens)
    return corpus


# ------------------------------------------------------------------------------------------------ reading
class _HashingReader(io.RawIOBase):
    """The raw bytes of a file, hashed and counted as they go by (for .gz: the compressed bytes)."""

    def __init__(self, raw: io.RawIOBase, on_read: Callable[[int], None]) -> None:
        super().__init__()
        self._raw = raw
        self._on_read = on_read
        self.sha256 = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.size += n
            self._on_read(n)
        return n or 0


def _iter_lines(stream: BinaryIO, path: Path, compressed: bool, max_chars: int) -> Iterator[tuple[int, str]]:
    """``(line number, text)``: each line stripped, ``""`` for a blank one; a line longer than ``max_chars``
    comes as several texts, never read whole (see the module docstring). DataError for bytes that are not UTF-8
    and for damaged gzip data."""
    size = max(max_chars, 4096)  # bytes per read: at most this many characters
    lineno = complete = 0
    try:
        while raw := stream.readline(size):
            lineno += 1
            if lineno == 1:
                raw = raw.removeprefix(codecs.BOM_UTF8)
            if len(raw) <= max_chars and (raw.endswith(b"\n") or len(raw) < size):  # readline stops short at EOF
                yield lineno, _decode(None, raw, path, lineno, 0).strip()
            else:
                yield from _long_line(stream, raw, path, lineno, max_chars, size)
            complete = lineno
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        if not compressed:
            raise
        raise DataError(f"{path}: damaged gzip data after line {complete} ({first_line(exc)})",
                        hint="re-create or re-download the file; `gzip -t` checks it") from None


def _long_line(stream: BinaryIO, raw: bytes, path: Path, lineno: int, max_chars: int,
               size: int) -> Iterator[tuple[int, str]]:
    """The texts of a line that may be longer than ``max_chars``, which begins with ``raw``: read ``size``
    bytes at a time and cut after the last place :data:`_LAST_CUT` allows (at ``max_chars`` if none)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    text, read, has_text = "", 0, False
    while True:
        end = not raw or raw.endswith(b"\n") or len(raw) < size
        text += _decode(decoder, raw, path, lineno, read, final=end)
        read += len(raw)
        while len(text) > max_chars:
            match = _LAST_CUT.match(text, 0, max_chars)
            cut = match.end() if match else max_chars
            piece, text = text[:cut].strip(), text[cut:]
            if piece:
                has_text = True
                yield lineno, piece
        if end:
            piece = text.strip()
            if piece or not has_text:
                yield lineno, piece
            return
        raw = stream.readline(size)


def _decode(decoder: codecs.IncrementalDecoder | None, raw: bytes, path: Path, lineno: int, read: int, *,
            final: bool = True) -> str:
    """``raw``, the bytes of a line after its first ``read``, as text (through ``decoder`` when the line comes
    in several reads); DataError naming file, line and the byte's column."""
    pending = len(decoder.getstate()[0]) if decoder is not None else 0
    try:
        return raw.decode("utf-8") if decoder is None else decoder.decode(raw, final)
    except UnicodeDecodeError as exc:
        column = read - pending + exc.start + 1
        raise DataError(f"{path}:{lineno}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at column {column} "
                        "of the line)", hint=_UTF8_HINT) from None


# ------------------------------------------------------------------------------------------------ writing
class _ArrayFile:
    """A 1-D ``.npy`` file written in pieces; its fixed-size header gets the final length at the end."""

    def __init__(self, path: Path, dtype: type[np.generic]) -> None:
        self.dtype = np.dtype(dtype)
        self.length = 0
        self._file = path.open("wb")
        self._file.write(_npy_header(self.dtype, 0))

    def append(self, values: np.ndarray) -> None:
        data = np.ascontiguousarray(values, dtype=self.dtype)
        self._file.write(data.tobytes())
        self.length += int(data.shape[0])

    def close(self) -> None:
        self._file.seek(0)
        self._file.write(_npy_header(self.dtype, self.length))
        self._file.close()

    def abort(self) -> None:
        self._file.close()


def _npy_header(dtype: np.dtype, length: int) -> bytes:
    """An npy 1.0 header for a 1-D C-order array, padded to exactly ``_NPY_HEADER_SIZE`` bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": (length,)})
    body = text.encode("latin1")
    pad = _NPY_HEADER_SIZE - 10 - len(body) - 1
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", _NPY_HEADER_SIZE - 10) + body + b" " * pad + b"\n"


class _CorpusWriter:
    """Reads files, tokenizes batches of lines and appends them to the four arrays."""

    def __init__(self, staging: Path, tokenizer: Tokenizer, words: str, reading: _Reading, paths: list[Path],
                 on_progress: ProgressCallback | None) -> None:
        self._tokenizer = tokenizer
        self._jieba = _jieba_tokenizer() if words == "jieba" else None
        self._continuation = np.fromiter((t.startswith("##") for t in tokenizer.tokens), dtype=bool,
                                         count=len(tokenizer.tokens))
        self._reading = reading
        self._on_progress = on_progress
        self._bytes_total = sum(p.stat().st_size for p in paths)
        self._bytes_read = 0
        self._arrays = {key: _ArrayFile(staging / name, dtype) for (key, name), dtype in zip(
            ARRAY_FILES.items(), (np.int32, np.bool_, np.int64, np.int64))}
        self._arrays["sentence_offsets"].append(np.zeros(1, np.int64))
        self._arrays["document_offsets"].append(np.zeros(1, np.int64))
        self._texts: list[str] = []
        self._breaks: list[bool] = []  # a document starts before this line
        self._pending_chars = 0
        self._num_tokens = 0
        self._num_sentences = 0
        self._num_documents = 0
        self._doc_sentences = 0
        self._dropped = 0
        self._lines = 0
        self._files: list[dict[str, Any]] = []

    def __enter__(self) -> _CorpusWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            for array in self._arrays.values():
                array.abort()

    def _read(self, n: int) -> None:
        self._bytes_read += n

    def add_file(self, path: Path) -> None:
        compressed = path.name.endswith(".gz")
        with path.open("rb", buffering=0) as raw:
            hashing = _HashingReader(raw, self._read)
            buffered = io.BufferedReader(hashing, _READ_BLOCK)
            stream: BinaryIO = gzip.GzipFile(fileobj=buffered, mode="rb") if compressed else buffered  # type: ignore[assignment]
            seen_text = blank_after_text = has_break = False
            new_document = True  # a file's first sentence starts a document
            lines = 0
            for lineno, text in _iter_lines(stream, path, compressed, self._reading.max_line_chars):
                lines = lineno
                if not text:
                    new_document = True
                    blank_after_text = seen_text
                    continue
                has_break = has_break or blank_after_text
                seen_text = True
                self._texts.append(text)
                self._breaks.append(new_document)
                new_document = False
                self._pending_chars += len(text)
                if self._pending_chars >= self._reading.batch_chars:
                    self._flush()
            while buffered.read(_READ_BLOCK):  # hash whatever follows the gzip stream, too
                pass
        self._lines += lines
        self._flush()
        if seen_text and not has_break:
            logger.warning("%s: no blank line between documents; the whole file is one document "
                           "(sentence-pair objectives need documents: %s)", path, _FORMAT_HINT)
        self._files.append({"path": str(path.resolve()), "name": path.name, "size": hashing.size,
                            "sha256": hashing.sha256.hexdigest()})

    def _flush(self) -> None:
        if self._texts:
            ids, starts, lengths = self._encode(self._texts)
            sentence_ends: list[int] = []
            document_ends: list[int] = []
            end = self._num_tokens
            for length, new_document in zip(lengths.tolist(), self._breaks):
                if new_document and self._doc_sentences:
                    document_ends.append(self._num_sentences)
                    self._doc_sentences = 0
                if length:
                    end += length
                    sentence_ends.append(end)
                    self._num_sentences += 1
                    self._doc_sentences += 1
                else:
                    self._dropped += 1
            self._num_documents += len(document_ends)
            self._num_tokens = end
            self._arrays["tokens"].append(ids)
            self._arrays["word_starts"].append(starts)
            self._arrays["sentence_offsets"].append(np.array(sentence_ends, np.int64))
            self._arrays["document_offsets"].append(np.array(document_ends, np.int64))
            self._texts, self._breaks, self._pending_chars = [], [], 0
        if self._on_progress is not None:
            self._on_progress(self._bytes_read, self._bytes_total)

    def _encode(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Token ids, word-start flags and per-text token counts of a batch of texts."""
        if self._jieba is None:
            id_lists = self._tokenizer.batch_ids(texts, split_special_tokens=True)
            lengths = np.fromiter(map(len, id_lists), np.int64, count=len(id_lists))
            ids = np.fromiter(itertools.chain.from_iterable(id_lists), np.int32, count=int(lengths.sum()))
            return ids, ~self._continuation[ids], lengths
        encoded = self._tokenizer(texts, return_offsets_mapping=True, split_special_tokens=True)
        id_parts: list[np.ndarray] = []
        start_parts: list[np.ndarray] = []
        lengths = np.zeros(len(texts), np.int64)
        for i, (text, with_specials, offsets) in enumerate(zip(texts, encoded["input_ids"],
                                                              encoded["offset_mapping"])):
            ids = np.asarray(with_specials[1:-1], np.int32)  # drop [CLS] ... [SEP]
            if not len(ids):
                continue
            word_ends = np.cumsum([len(w) for w in self._jieba.cut(text)])
            char_starts = np.fromiter((o[0] for o in offsets[1:-1]), np.int64, count=len(ids))
            word_of_token = np.searchsorted(word_ends, char_starts, side="right")
            starts = np.ones(len(ids), bool)
            starts[1:] = word_of_token[1:] != word_of_token[:-1]
            id_parts.append(ids)
            start_parts.append(starts & ~self._continuation[ids])
            lengths[i] = len(ids)
        if not id_parts:
            return np.zeros(0, np.int32), np.zeros(0, bool), lengths
        return np.concatenate(id_parts), np.concatenate(start_parts), lengths

    def finish(self) -> tuple[dict[str, int], list[dict[str, Any]]]:
        self._flush()
        if self._doc_sentences:
            self._arrays["document_offsets"].append(np.array([self._num_sentences], np.int64))
            self._num_documents += 1
            self._doc_sentences = 0
        if self._num_tokens == 0:
            names = ", ".join(str(f["path"]) for f in self._files)
            raise DataError(f"{names}: the corpus holds no tokens ({self._lines} lines read)",
                            hint=f"expected {_FORMAT_HINT}; check that the text matches the vocab")
        for array in self._arrays.values():
            array.close()
        counts = {"tokens": self._num_tokens, "sentences": self._num_sentences, "documents": self._num_documents,
                  "lines": self._lines, "dropped_sentences": self._dropped}
        return counts, self._files


# -------------------------------------------------------------------------------------------------- jieba
def _import_jieba() -> Any:
    try:
        import jieba
    except ImportError:
        raise UsageError('words="jieba" needs the jieba word segmenter, which is not installed',
                         hint="pip install jieba") from None
    return jieba


@functools.lru_cache(maxsize=1)
def _jieba_tokenizer() -> Any:
    """A private, initialised jieba tokenizer, made once per process (loading the dictionary takes about a
    second). Private because the user's global one may carry custom words, which would make the output depend
    on the calling program; jieba's startup messages are kept off the log."""
    jieba = _import_jieba()
    jieba_logger = logging.getLogger("jieba")
    level = jieba_logger.level
    jieba_logger.setLevel(logging.WARNING)
    try:
        segmenter = jieba.Tokenizer()
        segmenter.initialize()
    finally:
        jieba_logger.setLevel(level)
    return segmenter


__all__ = [
    "ARRAY_FILES",
    "DEFAULT_BATCH_CHARS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_LINE_CHARS",
    "META_FILE",
    "WORD_MODES",
    "ProgressCallback",
    "TokenizedCorpus",
    "WordMode",
    "prepare_corpus",
]
