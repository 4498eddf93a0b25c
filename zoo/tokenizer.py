"""The WordPiece tokenizer of Chinese BERT/ALBERT checkpoints, built on Hugging Face ``tokenizers``.

BERT normalisation (clean-up, CJK characters split apart, optional lowercasing and accent stripping),
BERT pre-tokenisation (whitespace and punctuation), WordPiece with ``##`` continuations, and the
``[CLS] A [SEP] B [SEP]`` template with token types 0/1. The call convention is transformers'::

    tok = Tokenizer.from_file("vocab.txt")
    batch = tok(["今天天气很好", "你好"], padding=True, return_tensors="pt")
    batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]

Vocab files may carry a second column (``token<TAB>count``, as some ALBERT releases do) and duplicate tokens;
ids are line numbers and a duplicated token maps to its first line.

Special tokens. By default, as in transformers, ``[MASK]``, ``[CLS]``, ``[SEP]``, ``[PAD]`` and ``[UNK]`` written
in the text become those tokens: fill-mask needs the user's ``[MASK]``. Raw text -- a pretraining corpus,
fine-tuning data -- is tokenized with ``split_special_tokens=True`` (transformers' name for it): there the strings
are plain text, split as upstream's ``FullTokenizer`` splits them (``[``, ``mask``, ``]``), and special token ids
come only from the template (``[CLS]``/``[SEP]``) and from zoo's own assembly of examples.

Every call behaves as if the tokenizer were fresh: truncation and padding are options of the call, never state
left behind by an earlier one, and calls from several threads at once are safe. (The Rust tokenizer keeps
truncation/padding as mutable settings, so each combination of options gets its own configured copy, made once
and never changed afterwards.)
"""

from __future__ import annotations

import gzip
import os
import re
import threading
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers import decoders
from tokenizers.models import WordPiece
from tokenizers.normalizers import BertNormalizer
from tokenizers.pre_tokenizers import BertPreTokenizer
from tokenizers.processors import TemplateProcessing

from zoo.errors import CheckpointError, DataError, NotFoundError, UsageError, first_line
from zoo.progress import ProgressCallback, ProgressEvent
from zoo.vocab import read_vocab

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
#: Tokens :mod:`zoo.vocab` puts in place of empty and repeated lines (an empty line of a compact, ALBERT-ordered
#: vocab is ``[zoo-empty]``, without a line number) and on the rows a compact vocab's dropped lines leave free.
_PLACEHOLDER = re.compile(r"\[zoo-(?:empty(?:-\d+)?|dup-\d+|unused-\d+)\]")
#: Configured copies kept per tokenizer (one per distinct truncation/padding/splitting combination in use).
_MAX_CONFIGURED = 8
#: A longer word is one [UNK] (BERT's ``max_input_chars_per_word``).
_MAX_WORD = 100

TextInput = str | Sequence[str]
#: What a configured copy is set up for: (truncate to, padding mode, pad to, split special tokens).
_Options = tuple[int | None, str | None, int | None, bool]


class Tokenizer:
    """BERT WordPiece tokenizer. ``lowercase``/``strip_accents`` follow transformers' BertTokenizer
    (``strip_accents=None`` strips accents exactly when lowercasing)."""

    def __init__(self, vocab: Sequence[str], *, lowercase: bool = True, strip_accents: bool | None = None,
                 model_max_length: int = 512, source: str = "vocab") -> None:
        self.tokens: list[str] = list(vocab)
        self.vocab: dict[str, int] = {}
        for i, token in enumerate(self.tokens):
            if token:
                self.vocab.setdefault(token, i)  # duplicates: the first id wins
        missing = [t for t in SPECIAL_TOKENS if t not in self.vocab]
        if missing:
            raise CheckpointError(f"{source} lacks the special token(s) {', '.join(missing)}",
                                  hint="a BERT/ALBERT WordPiece vocab.txt has [PAD], [UNK], [CLS], [SEP], [MASK]")
        self.lowercase = lowercase
        self.strip_accents = strip_accents
        self.model_max_length = model_max_length
        self.pad_token_id, self.unk_token_id, self.cls_token_id, self.sep_token_id, self.mask_token_id = (
            self.vocab[t] for t in SPECIAL_TOKENS)
        self.special_ids = frozenset(self.vocab[t] for t in SPECIAL_TOKENS)
        #: ids no text can produce: the placeholders of empty, repeated and dropped vocab lines (zoo.vocab)
        self.unreachable_ids = frozenset(i for i, t in enumerate(self.tokens) if _PLACEHOLDER.fullmatch(t))

        tok = _bert_wordpiece(WordPiece(self.vocab, unk_token="[UNK]", max_input_chars_per_word=_MAX_WORD),
                              lowercase, strip_accents)
        tok.post_processor = TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", self.cls_token_id), ("[SEP]", self.sep_token_id)])
        tok.decoder = decoders.WordPiece(prefix="##")
        tok.add_special_tokens(list(SPECIAL_TOKENS))  # "[MASK]" in text stays one token (unless split)
        self._tok = tok  # never truncates, pads or splits special tokens; configured copies below do
        self._lock = threading.Lock()
        self._configured: OrderedDict[_Options, _HFTokenizer] = OrderedDict()

    @classmethod
    def from_file(cls, path: str | Path, *, lowercase: bool = True, strip_accents: bool | None = None,
                  model_max_length: int = 512) -> Tokenizer:
        """Read a WordPiece ``vocab.txt``: one token per line (first column), the line number is the id."""
        return cls(read_vocab_tokens(Path(path)), lowercase=lowercase, strip_accents=strip_accents,
                   model_max_length=model_max_length, source=str(path))

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    def __len__(self) -> int:
        return len(self.tokens)

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, lowercase={self.lowercase}, "
                f"model_max_length={self.model_max_length})")

    # --------------------------------------------------------------------------------------- encode
    def __call__(self, text: TextInput, text_pair: TextInput | None = None, *, padding: bool | str = False,
                 truncation: bool = False, max_length: int | None = None, return_tensors: str | None = None,
                 return_offsets_mapping: bool = False, split_special_tokens: bool = False) -> dict[str, Any]:
        """Encode one text (or pair) or a batch. Returns ``input_ids``, ``token_type_ids``,
        ``attention_mask`` (and ``offset_mapping``): lists for one text, lists of lists for a batch,
        ``[B, T]`` tensors with ``return_tensors="pt"``.

        ``padding``: ``False``, ``True``/``"longest"`` or ``"max_length"``. ``truncation=True`` cuts to
        ``max_length`` (default: the model's positions), longest sequence of a pair first.
        ``split_special_tokens=True``: raw text, where "[MASK]" is the characters ``[``, ``mask``, ``]``.
        """
        single = isinstance(text, str)
        texts = [text] if single else list(text)
        if text_pair is not None:
            pairs = [text_pair] if isinstance(text_pair, str) else list(text_pair)
            if len(pairs) != len(texts):
                raise UsageError(f"got {len(texts)} texts but {len(pairs)} text_pair entries")
            inputs: list[Any] = list(zip(texts, pairs))
        else:
            inputs = texts
        if return_tensors not in (None, "pt"):
            raise UsageError(f"return_tensors={return_tensors!r} is not supported", hint='use None or "pt"')
        if padding not in (False, True, "longest", "max_length", "do_not_pad"):
            raise UsageError(f"padding={padding!r} is not supported",
                             hint='use False, True ("longest") or "max_length"')
        limit = max_length or self.model_max_length
        if limit < 1:
            raise UsageError(f"max_length must be at least 1, got {limit}")
        pad_mode = "longest" if padding in (True, "longest") else "max_length" if padding == "max_length" else None
        tok = self._configured_for((limit if truncation else None, pad_mode,
                                    limit if pad_mode == "max_length" else None, split_special_tokens))
        encodings = tok.encode_batch(inputs)

        out: dict[str, Any] = {
            "input_ids": [e.ids for e in encodings],
            "token_type_ids": [e.type_ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_offsets_mapping:
            out["offset_mapping"] = [e.offsets for e in encodings]
        if return_tensors == "pt":
            import torch

            lengths = {len(ids) for ids in out["input_ids"]}
            if len(lengths) > 1:
                raise UsageError("texts encode to different lengths; cannot make one tensor",
                                 hint="pass padding=True")
            return {k: torch.tensor(v, dtype=torch.long) for k, v in out.items()}
        if single:
            return {k: v[0] for k, v in out.items()}
        return out

    def _configured_for(self, options: _Options) -> _HFTokenizer:
        """The Rust tokenizer set up for these options: the plain one, or a copy configured once and cached."""
        if options == (None, None, None, False):
            return self._tok
        truncate, pad_mode, pad_length, split = options
        with self._lock:
            tok = self._configured.get(options)
            if tok is None:
                tok = _HFTokenizer.from_str(self._tok.to_str())
                if truncate is not None:
                    tok.enable_truncation(truncate, strategy="longest_first")
                if pad_mode is not None:
                    tok.enable_padding(pad_id=self.pad_token_id, pad_token="[PAD]", length=pad_length)
                tok.encode_special_tokens = split  # True: the special tokens are not looked for in the text
                self._configured[options] = tok
                while len(self._configured) > _MAX_CONFIGURED:
                    self._configured.popitem(last=False)
            else:
                self._configured.move_to_end(options)
            return tok

    def _plain(self, split_special_tokens: bool) -> _HFTokenizer:
        """The tokenizer without truncation or padding."""
        return self._configured_for((None, None, None, split_special_tokens))

    def batch_ids(self, texts: Sequence[str], *, special_tokens: bool = False,
                  split_special_tokens: bool = False) -> list[list[int]]:
        """Token ids of many texts at once (the Rust tokenizer works in parallel); no truncation, no padding.

        Without ``special_tokens`` no ``[CLS]``/``[SEP]`` is added: the ids of the text alone.
        ``split_special_tokens=True`` for raw text (see the module docstring).
        """
        tok = self._plain(split_special_tokens)
        return [e.ids for e in tok.encode_batch(list(texts), add_special_tokens=special_tokens)]

    def tokenize(self, text: str, text_pair: str | None = None, *, split_special_tokens: bool = False) -> list[str]:
        """Word pieces of ``text`` without the [CLS]/[SEP] template."""
        return self._plain(split_special_tokens).encode(text, text_pair, add_special_tokens=False).tokens

    def encode(self, text: str, text_pair: str | None = None, *, split_special_tokens: bool = False) -> list[int]:
        """Ids of ``text`` (or the pair) with [CLS]/[SEP]."""
        return self._plain(split_special_tokens).encode(text, text_pair).ids

    # --------------------------------------------------------------------------------------- decode
    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        if isinstance(tokens, str):
            return self.vocab.get(tokens, self.unk_token_id)
        return [self.vocab.get(t, self.unk_token_id) for t in tokens]

    def convert_ids_to_tokens(self, ids: int | Sequence[int]) -> str | list[str]:
        if isinstance(ids, int):
            return self._token(ids)
        return [self._token(int(i)) for i in ids]

    def _token(self, i: int) -> str:
        if not 0 <= i < len(self.tokens):
            raise UsageError(f"token id {i} is outside the vocabulary (0..{len(self.tokens) - 1})")
        return self.tokens[i]

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
        """Join word pieces back into text (CJK characters come out space-separated, as in transformers)."""
        ids = [int(i) for i in ids]
        if skip_special_tokens:
            ids = [i for i in ids if i not in self.special_ids]
        return str(self._tok.decoder.decode(self.convert_ids_to_tokens(ids)))


def _bert_wordpiece(model: WordPiece, lowercase: bool, strip_accents: bool | None) -> _HFTokenizer:
    """A ``tokenizers`` WordPiece tokenizer with BERT's normalisation and pre-tokenisation: what :class:`Tokenizer`
    runs, and what :func:`train_wordpiece` learns on."""
    tok = _HFTokenizer(model)
    tok.normalizer = BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=strip_accents,
                                    lowercase=lowercase)
    tok.pre_tokenizer = BertPreTokenizer()
    return tok


def train_wordpiece(files: Sequence[str | os.PathLike[str]], vocab_size: int, *, lowercase: bool = True,
                    strip_accents: bool | None = None, progress: ProgressCallback | None = None) -> list[str]:
    """A WordPiece vocab learned from UTF-8 text files (``.gz`` too): its tokens in id order.

    The text is normalised and pre-tokenised exactly as :class:`Tokenizer` does (BERT's rules: every CJK character
    is a word of its own, punctuation is split off), and ``tokenizers``' trainer keeps every character it saw —
    even beyond ``vocab_size`` — so the text tokenizes without ``[UNK]``. :data:`SPECIAL_TOKENS` take ids 0-4,
    in that order ([PAD] is 0, as in BERT's vocabs); there are no ``[unusedN]`` slots. ``progress`` gets
    ``tokenize`` events (bytes of the files read).
    """
    from tokenizers.trainers import WordPieceTrainer

    paths = [Path(f) for f in files]
    if not paths:
        raise UsageError("no text files to train a vocab on")
    minimum = len(SPECIAL_TOKENS) + 1
    if vocab_size < minimum:
        raise UsageError(f"vocab size {vocab_size} is too small", hint=f"use at least {minimum}; BERT's Chinese vocab "
                                                                       "has 21128 tokens")
    tok = _bert_wordpiece(WordPiece(unk_token="[UNK]", max_input_chars_per_word=_MAX_WORD), lowercase, strip_accents)
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS), show_progress=False,
                               continuing_subword_prefix="##")
    tok.train_from_iterator(_text_batches(paths, progress or (lambda event: None)), trainer)
    ids = tok.get_vocab()
    tokens = sorted(ids, key=ids.__getitem__)
    if [ids[t] for t in tokens] != list(range(len(tokens))) or tokens[:len(SPECIAL_TOKENS)] != list(SPECIAL_TOKENS):
        raise AssertionError("tokenizers' trainer left gaps in the ids")  # a bug, not a user error
    if len(tokens) == len(SPECIAL_TOKENS):
        raise DataError(f"{', '.join(map(str, paths))}: no text to learn a vocab from",
                        hint="pass UTF-8 text files with at least one non-blank line")
    return tokens


def _text_batches(paths: list[Path], emit: ProgressCallback, batch: int = 1000) -> Iterator[list[str]]:
    """The lines of ``paths`` in batches; a file that is missing, not UTF-8 or damaged gzip is a zoo error."""
    try:
        sizes = [p.stat().st_size for p in paths]
    except FileNotFoundError as exc:
        raise NotFoundError(f"{exc.filename}: no such text file") from None
    done, total = 0, sum(sizes)
    emit(ProgressEvent("tokenize", "vocab", done=0, total=total))
    for path, size in zip(paths, sizes):
        if path.is_dir():
            raise NotFoundError(f"{path}: is a directory, not a text file")
        lines: list[str] = []
        lineno = 0
        try:
            with path.open("rb") as raw:
                stream: Any = gzip.GzipFile(fileobj=raw) if path.name.endswith(".gz") else raw
                for lineno, line in enumerate(stream, 1):  # noqa: B007 - named in the error below
                    lines.append(line.decode("utf-8"))
                    if len(lines) == batch:
                        yield lines
                        lines = []
                        emit(ProgressEvent("tokenize", "vocab", done=done + raw.tell(), total=total))
        except UnicodeDecodeError:
            raise DataError(f"{path}: line {lineno} is not UTF-8 text", hint="convert the file to UTF-8") from None
        except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: damaged gzip data after line {lineno} ({first_line(exc)})",
                            hint="re-create the file; `gzip -t` checks it") from None
        yield lines
        done += size
        emit(ProgressEvent("tokenize", "vocab", done=done, total=total))
    emit(ProgressEvent("done", "vocab"))


def read_vocab_tokens(path: Path) -> list[str]:
    """The tokens of a vocab file, one per line (first whitespace-separated column; id = line number).

    An empty line, and a repeated token after its first line, keep their ids with a placeholder no text can
    produce, so ids always match the embedding rows of the checkpoint the vocab came with and a repeated token
    maps to its first id (:func:`zoo.vocab.read_vocab`).
    """
    return read_vocab(path).tokens


__all__ = ["SPECIAL_TOKENS", "Tokenizer", "read_vocab_tokens", "train_wordpiece"]
