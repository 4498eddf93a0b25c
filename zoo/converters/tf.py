"""The TF converter: an upstream TF release (or a bare checkpoint prefix) → zoo's converted directory.

Reads the checkpoint with zoo's TensorBundle reader (no TensorFlow, no torch: numpy views of the bytes), maps
names through the scheme's plan (:mod:`zoo.converters.schemes`), streams every tensor into ``model.safetensors``
and writes ``config.json``, the normalized ``vocab.txt`` and a receipt through :mod:`zoo.converters.modeldir`.
Each file is read once and written once: the input shards are sha256-hashed in the same pass that checks the
tensors' CRC32C (or not at all when their verified digests are passed in), the output is hashed while it is
written, and reading, transposing, writing and hashing run on their own threads (see :func:`_write_weights`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from zoo._fs import sha256_file
from zoo.config import (
    CLASSIFIER_DROPOUT,
    SCHEME_ARCHITECTURE,
    InvalidConfig,
    ModelConfig,
    normalize_dtype,
    upstream_architecture,
)
from zoo.converters.arrays import FLOAT_DTYPES, cast, transposed_bands, view
from zoo.converters.modeldir import (
    CONFIG,
    CONVERTER_VERSION,
    VOCAB,
    WEIGHTS,
    Staged,
    check_output_dir,
    read_json,
    staged_output,
)
from zoo.converters.names import CLASSIFIER_WEIGHTS, TASK_NAME_MAPS
from zoo.converters.safetensors_out import Spec, header
from zoo.converters.schemes import Plan, check_scheme, detect_scheme, plan
from zoo.converters.vocab import Vocab, fit_rows, looks_cased, read_vocab
from zoo.errors import CheckpointError, NotFoundError, UsageError
from zoo.progress import ProgressCallback, ProgressEvent
from zoo.tf.bundle import ITEMSIZE, FileDigest, ShardReader, TensorBundle, find_prefix

log = logging.getLogger("zoo.converters")


#: The labels of a fine-tuned classifier, one per line in id order, next to its checkpoint (``zoo export --format
#: tf`` writes it; upstream scripts keep them in code, so a release of theirs has none).
LABELS_FILE = "labels.txt"
_SEQUENCE_CLASSIFICATION = "sequence-classification"


@dataclasses.dataclass(frozen=True)
class Release:
    """The files of one upstream release: checkpoint prefix, config JSON (if any), vocab and, for a fine-tuned
    classifier, its labels (:data:`LABELS_FILE`, if any)."""

    prefix: Path
    config_file: Path | None
    vocab_file: Path
    labels_file: Path | None = None


def _pick(directory: Path, pattern: str, what: str, option: str, prefer: tuple[str, ...] = ()) -> Path | None:
    found = sorted(p for p in directory.glob(pattern) if p.is_file())
    if len(found) > 1 and prefer:
        preferred = [p for p in found if p.name.startswith(prefer)]
        found = preferred or found
    if len(found) > 1:
        raise UsageError(f"{directory}: several {what} files ({', '.join(p.name for p in found)})",
                         hint=f"choose one with {option}")
    return found[0] if found else None


def find_release(src: str | os.PathLike[str], *, config: str | os.PathLike[str] | None = None,
                 vocab: str | os.PathLike[str] | None = None, need_config: bool = True) -> Release:
    """Find the checkpoint, config and vocab of an upstream release directory (or next to a prefix)."""
    prefix = find_prefix(src)
    directory = prefix.parent
    config_file = Path(config) if config is not None else None
    if config_file is None and need_config:
        config_file = _pick(directory, "*config*.json", "config", "--config", prefer=("albert_config", "bert_config"))
        if config_file is None:
            raise NotFoundError(f"{directory}: no *config*.json next to the checkpoint",
                                hint="pass the model's config with --config CONFIG.json")
    vocab_file = Path(vocab) if vocab is not None else _pick(directory, "vocab*.txt", "vocab", "--vocab")
    if vocab_file is None:
        raise NotFoundError(f"{directory}: no vocab*.txt next to the checkpoint",
                            hint="pass the vocab file with --vocab VOCAB.txt")
    for path in (config_file, vocab_file):
        if path is not None and not path.is_file():
            raise NotFoundError(f"{path}: no such file")
    labels_file = directory / LABELS_FILE
    return Release(prefix, config_file, vocab_file, labels_file if labels_file.is_file() else None)


def read_labels(path: Path) -> tuple[str, ...]:
    """A classifier's labels from ``path``: one per line, in id order (spaces at the edges are not part of a
    label). An empty line or a file that is not UTF-8 is a CheckpointError."""
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8-sig").splitlines()]
    except UnicodeDecodeError:
        raise CheckpointError(f"{path} is not UTF-8 text", hint="write one label per line, in id order") from None
    except OSError as exc:
        raise CheckpointError(f"{path} is not readable ({exc.strerror or exc})") from None
    empty = next((i for i, line in enumerate(lines, 1) if not line), None)
    if empty is not None or not lines:
        raise CheckpointError(f"{path}: {f'line {empty} is empty' if empty else 'no labels'}",
                              hint="write one label per line, in id order")
    return tuple(lines)


def load_config(path: Path, architecture: str | None = None) -> ModelConfig:
    """Read a config JSON (:func:`parse_config`). Every value is checked; a bad one is a CheckpointError naming the
    file and the key."""
    try:
        data = read_json(path)
    except OSError as exc:  # unreadable (a missing file is a NotFoundError)
        raise CheckpointError(f"{path}: not a readable JSON config ({exc})") from None
    return parse_config(data, str(path), architecture)


def parse_config(data: Mapping[str, Any], origin: str, architecture: str | None = None) -> ModelConfig:
    """A config mapping read from ``origin``: zoo's own (it has ``architecture``), transformers' (``model_type``,
    transformers' meaning) or an upstream one (upstream meaning), whose architecture is ``architecture`` — where a
    checkpoint tells — else told from its keys (:func:`zoo.config.upstream_architecture`)."""
    try:
        if "architecture" in data:
            return ModelConfig.from_dict(data)
        if "model_type" in data:
            from zoo.converters.hf_names import config_from_transformers

            return config_from_transformers(data)
        return ModelConfig.from_upstream(data, architecture or upstream_architecture(data))
    except InvalidConfig as exc:
        raise CheckpointError(exc.message(origin), hint="pass the release's own config (--config CONFIG.json); an "
                                                        "upstream config states vocab_size, hidden_size, "
                                                        "num_hidden_layers, num_attention_heads, intermediate_size") \
            from None


_READ_CHUNK = 8 << 20  # bytes per read of the input shards
_BAND_BYTES = 8 << 20  # a transposed kernel is written in row bands of about this size
_BANDS = 3  # band buffers in flight (one being filled, the others queued for the output threads)
_AHEAD = 640 << 20  # tensor bytes the reader may have started beyond what is written (one tensor always)


class _Output:
    """The weights file, written and sha256-hashed on two threads of their own, in order.

    :meth:`put` queues a buffer for both (blocking when ``depth`` are waiting); ``release`` (if given) runs once
    both are done with it, so its memory can be reused. An error in either thread (a full disk) is raised by the
    next :meth:`put` or by :meth:`finish`, which returns the file's sha256 and size."""

    def __init__(self, fh: Any, depth: int = 4) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.queues: list[queue.Queue[list[Any] | None]] = [queue.Queue(depth), queue.Queue(depth)]
        self.threads = [threading.Thread(target=self._run, args=(q, fn), name=f"zoo-{what}", daemon=True)
                        for q, fn, what in zip(self.queues, (self._write, self.sha.update), ("writer", "hasher"))]
        for thread in self.threads:
            thread.start()

    def _write(self, data: Any) -> None:
        self.fh.write(data)

    def put(self, data: Any, release: Callable[[], None] | None = None) -> None:
        if self.error is not None:
            raise self.error
        if isinstance(data, np.ndarray):
            data = data.reshape(-1).view(np.uint8).data
        self.size += len(data)
        item = [data, release, len(self.queues)]  # buffer, release, users left
        for q in self.queues:
            q.put(item)

    def _run(self, q: queue.Queue[list[Any] | None], fn: Callable[[Any], Any]) -> None:
        while (item := q.get()) is not None:
            try:
                if self.error is None and len(item[0]):
                    fn(item[0])
            except BaseException as exc:  # kept for the producer; keep draining so it never blocks
                self.error = exc
            finally:
                with self.lock:
                    item[2] -= 1
                    last = item[2] == 0
                if last and item[1] is not None:
                    item[1]()

    def _stop(self) -> None:
        for q in self.queues:
            q.put(None)
        for thread in self.threads:
            thread.join()

    def finish(self) -> tuple[str, int]:
        self._stop()
        if self.error is not None:
            raise self.error
        return self.sha.hexdigest(), self.size

    def abort(self) -> None:
        self._stop()


def _write_weights(staged: Staged, bundle: TensorBundle, the_plan: Plan, dtype: str | None,
                   metadata: dict[str, str], emit: ProgressCallback, label: str,
                   hash_data: bool) -> tuple[int, list[FileDigest]]:
    """Stream every planned tensor into the weights file; returns the parameter count and, with ``hash_data``,
    the data shards' sha256 (computed while they were read).

    Four threads share the work: a :class:`~zoo.tf.bundle.ShardReader` goes through the memory-mapped shards
    front to back, hashing them and checking each tensor's CRC32C; this thread transposes kernels (tiled, from the
    mapping straight into recycled band buffers: :class:`_Bands`) and casts — a kernel as soon as the reader
    reaches it, while the reader hashes it; :class:`_Output`'s two threads write the output and hash it.
    Untransposed tensors go from the mapping to the output without a copy. A tensor's mapped pages are dropped once
    it is written, and the reader keeps at most :data:`_AHEAD` bytes of tensors in flight, so memory stays below
    the output's size. No torch: numpy views."""
    by_name = {t.tf_name: t for t in the_plan.targets}
    flipped = {name for name, t in by_name.items() if t.transpose}
    reader = ShardReader(bundle, by_name, whole=flipped, sha256=hash_data, chunk=_READ_CHUNK, ahead=_AHEAD)
    specs = [Spec(by_name[v.name].name, dtype or v.dtype, by_name[v.name].shape) for v in reader.order]
    bands = _Bands(_BANDS if flipped else 0, max((v.shape[0] * 8 for v in reader.order if v.name in flipped),
                                                 default=0))
    params, done, total, received = 0, 0, sum(spec.nbytes for spec in specs), 0
    with staged.raw_file(WEIGHTS) as fh:
        writer = _Output(fh)
        try:
            writer.put(header(specs, metadata))
            with reader:
                for var, chunk in reader:
                    out_dtype = dtype or var.dtype
                    if var.name in flipped:  # one view of the whole kernel
                        bands.put_transposed(writer, view(chunk, var.dtype, var.shape), var.dtype, out_dtype)
                        del chunk  # no reference left to the mapping: its pages can go
                        reader.release(var)
                    else:  # chunks, the last one completing the tensor
                        received += len(chunk)
                        last = received == var.size
                        _put_chunk(writer, reader, var, chunk, out_dtype, last=last)
                        del chunk
                        if not last:
                            continue
                        received = 0
                    params += var.numel
                    done += var.numel * ITEMSIZE[out_dtype]
                    emit(ProgressEvent("convert", label, done=done, total=total))
                sha, size = writer.finish()
        except BaseException:
            writer.abort()
            raise
    staged.record(WEIGHTS, "weights", sha, size)
    return params, reader.digests


class _Bands:
    """The band buffers transposed kernels are written through: ``count`` of them, recycled once the output
    threads are done with one, so a kernel of any size costs a few bands of memory."""

    def __init__(self, count: int, row_bytes: int) -> None:
        self._free: queue.Queue[np.ndarray] = queue.Queue()
        for _ in range(count):
            self._free.put(np.empty(_BAND_BYTES + row_bytes, dtype=np.uint8))
        self._taken: list[np.ndarray] = []

    def _buffers(self, of: np.dtype[Any]) -> Iterator[np.ndarray]:
        while True:
            raw = self._free.get()
            self._taken.append(raw)
            yield raw.view(of)

    def put_transposed(self, writer: _Output, x: np.ndarray, dtype: str, out_dtype: str) -> None:
        """Queue the transpose of the kernel ``x`` (storage bits of ``dtype``), cast to ``out_dtype``, for the
        output, a band at a time."""
        for band in transposed_bands(x, self._buffers(x.dtype), _BAND_BYTES):
            raw = self._taken.pop()
            if out_dtype == dtype:
                writer.put(band, functools.partial(self._free.put, raw))
            else:
                converted = cast(band, dtype, out_dtype)
                self._free.put(raw)
                writer.put(converted)


def _put_chunk(writer: _Output, reader: ShardReader, var: Any, chunk: Any, out_dtype: str, *, last: bool) -> None:
    """Queue a chunk of an untransposed tensor (cast to ``out_dtype``); after its ``last`` chunk the reader may drop
    the tensor's pages (once the output threads are done with it, when it is not cast)."""
    if out_dtype == var.dtype:
        writer.put(chunk, functools.partial(reader.release, var) if last else None)
        return
    writer.put(cast(view(chunk, var.dtype, (len(chunk) // ITEMSIZE[var.dtype],)), var.dtype, out_dtype))
    if last:
        reader.release(var)


def _hash_inputs(bundle: TensorBundle, release: Release, digests: list[FileDigest],
                 known: Mapping[Path, str]) -> list[dict[str, Any]]:
    """Receipt records of every input file: sha256 computed while reading (data shards), looked up in ``known``
    (a verified snapshot's record), or hashed now (the small files)."""
    data = {d.path: d for d in digests}
    files = [(bundle.index_path, "checkpoint-index")] + [(p, "checkpoint-data") for p in bundle.data_files]
    if release.config_file is not None:
        files.append((release.config_file, "config"))
    files.append((release.vocab_file, "vocab"))
    if release.labels_file is not None:
        files.append((release.labels_file, "labels"))
    records = []
    for path, role in files:
        record: dict[str, Any] = {"path": path.name, "role": role}
        sha = known.get(_key(path))
        if sha is not None:
            record.update(size=path.stat().st_size, sha256=sha, hashed="verified snapshot")
        elif path in data:
            record.update(size=data[path].size, sha256=data[path].sha256)
        else:
            sha, size = sha256_file(path)
            record.update(size=size, sha256=sha)
        records.append(record)
    return records


def _key(path: Path) -> Path:
    return Path(os.path.abspath(path))


def convert(src: str | os.PathLike[str], out: str | os.PathLike[str], *, scheme: str = "auto",
            config: ModelConfig | str | os.PathLike[str] | None = None,
            vocab: str | os.PathLike[str] | None = None, dtype: str | None = None,
            progress: ProgressCallback | None = None, labels: Sequence[str] | None = None) -> Path:
    """Convert a TensorFlow checkpoint to zoo's format (no TensorFlow needed); returns ``out``.

    ``src`` is an upstream release directory (checkpoint + ``*config*.json`` + ``vocab*.txt``) or a checkpoint
    prefix. ``scheme`` is ``auto`` (detected from the variable names) or one of
    ``google-albert``, ``brightmart-albert``, ``google-bert``. ``config`` overrides the release's config: a
    :class:`ModelConfig`, zoo's ``config.json`` or an upstream config JSON (read with upstream meaning).
    ``dtype`` (``float32``/``float16``/``bfloat16``, or ``fp32``/``fp16``/``bf16``) casts the weights; default:
    as stored. ``progress`` receives ``convert`` events (bytes written).

    A checkpoint fine-tuned by upstream ``run_classifier.py`` (``output_weights``/``output_bias`` next to
    ``bert/...``) becomes a ready sequence classifier: ``labels`` names its outputs in id order (default: the
    release's ``labels.txt``, else ``LABEL_0`` … ``LABEL_{n-1}``).

    A transformers folder (``config.json`` with ``model_type``, as ``zoo export`` and ``save_pretrained`` write
    it) is converted too, by :func:`zoo.converters.transformers.convert_transformers_dir`: its config describes
    it (``id2label`` its labels), so ``scheme``, ``config`` and ``labels`` do not apply. ``out`` must be a new or
    empty directory outside zoo's cache (:func:`zoo.converters.modeldir.check_output_dir`).
    """
    from zoo.converters.transformers import convert_transformers_dir, is_transformers_dir

    out = check_output_dir(out)
    if is_transformers_dir(Path(src)):
        if scheme != "auto" or config is not None or labels is not None:
            raise UsageError(f"{src} is a transformers folder: --scheme, --config and --labels apply to TensorFlow "
                             "checkpoints", hint="its config.json describes the model (id2label its labels); leave "
                                                 "them out")
        return convert_transformers_dir(Path(src), out, vocab=vocab, dtype=dtype)
    given = config if isinstance(config, ModelConfig) else None
    config_file = None if isinstance(config, ModelConfig) else config
    release = find_release(src, config=config_file, vocab=vocab, need_config=given is None)
    return convert_release(release, out, scheme=scheme, config=given, dtype=dtype, progress=progress, labels=labels)


def with_classifier(config: ModelConfig, shapes: Mapping[str, tuple[int, ...]], release: Release,
                    labels: Sequence[str] | None = None) -> tuple[ModelConfig, Release]:
    """``config`` as the checkpoint's variables (``shapes``) describe it: with upstream ``run_classifier.py``'s
    head, a fine-tuned sequence classifier — labels ``labels``, else those ``config`` names, else the release's
    :data:`LABELS_FILE`, else ``LABEL_0`` …; its dropout the config's, else upstream's 0.1. Returns the release with
    the labels file it read (none where it read none), for the receipt."""
    found = shapes.get(CLASSIFIER_WEIGHTS)
    if found is None:
        if labels is not None:
            raise UsageError(f"{release.prefix} has no classifier ({CLASSIFIER_WEIGHTS}): labels name nothing",
                             hint="labels apply to a checkpoint fine-tuned by run_classifier.py")
        if config.task is not None and config.task not in TASK_NAME_MAPS:  # a TF checkpoint cannot hold its head
            log.warning("%s: the config describes a %s head, which TF checkpoints do not hold: converted as an "
                        "encoder", release.prefix, config.task)
            config = dataclasses.replace(config, task=None, labels=None, tag_scheme=None, classifier_dropout_prob=None)
        return config, dataclasses.replace(release, labels_file=None)
    count = found[0]  # its full shape is checked with every other variable (schemes.plan)
    used = None
    if labels is not None:
        names = tuple(labels)
    elif config.task == _SEQUENCE_CLASSIFICATION and config.labels:  # a zoo config.json given with --config
        names = config.labels
    elif release.labels_file is not None:
        used = release.labels_file
        names = read_labels(used)
    else:
        names = tuple(f"LABEL_{i}" for i in range(count))
    if len(names) != count:
        origin = "the labels given" if labels is not None else str(used or "the config")
        error = UsageError if labels is not None else CheckpointError
        raise error(f"{release.prefix}: the classifier has {count} outputs, {origin} name {len(names)} labels",
                    hint="name one label per output, in id order (zoo convert --labels A B …)")
    dropout = config.classifier_dropout_prob
    try:
        tuned = dataclasses.replace(config, task=_SEQUENCE_CLASSIFICATION, labels=names, tag_scheme=None,
                                    classifier_dropout_prob=CLASSIFIER_DROPOUT if dropout is None else dropout)
    except InvalidConfig as exc:
        raise UsageError(exc.message(used or release.prefix), hint="name each label once, in id order") from None
    return tuned, dataclasses.replace(release, labels_file=used)


def convert_release(release: Release, out: Path, *, scheme: str = "auto", config: ModelConfig | None = None,
                    dtype: str | None = None, source_sha256: str | None = None,
                    progress: ProgressCallback | None = None, label: str | None = None,
                    known_sha256: Mapping[str | os.PathLike[str], str] | None = None,
                    labels: Sequence[str] | None = None) -> Path:
    """Convert the files of ``release`` into ``out``; ``config`` (if given) replaces its config file, ``labels``
    name a fine-tuned classifier's outputs (:func:`with_classifier`).

    ``known_sha256`` maps input files (absolute paths) to sha256 digests already verified — a cache snapshot's
    marker — so the receipt records them without hashing the files again (their CRC32Cs are still checked)."""
    known = {_key(Path(p)): sha for p, sha in (known_sha256 or {}).items()}
    dtype = normalize_dtype(dtype) if dtype is not None else None
    emit = progress or (lambda event: None)
    label = label or release.prefix.parent.name or release.prefix.name
    bundle = TensorBundle(release.prefix)
    try:
        shapes = {name: var.shape for name, var in bundle.variables.items()}
        scheme = detect_scheme(shapes) if scheme == "auto" else check_scheme(scheme)
        architecture = SCHEME_ARCHITECTURE[scheme]
        if config is not None:
            model_config = config
        else:
            assert release.config_file is not None
            model_config = load_config(release.config_file, architecture)
        model_config, release = with_classifier(model_config, shapes, release, labels)
        the_plan = plan(scheme, model_config, shapes)
        for target in the_plan.targets:
            var = bundle.variables[target.tf_name]
            if var.dtype not in FLOAT_DTYPES:
                raise CheckpointError(f"{bundle.index_path}: variable {var.name!r} is {var.dtype}, "
                                      "expected a float type")
        vocab_data = fit_rows(read_vocab(release.vocab_file, compact=scheme == "google-albert"),
                              model_config.vocab_size, release.vocab_file)
        log.info("converting %s (%s, %d variables, %d skipped: %s)", release.prefix, scheme, len(bundle),
                 len(the_plan.skipped_names), the_plan.skipped or "none")
        metadata = {"format": "pt", "zoo.scheme": scheme, "zoo.architecture": architecture,
                    "zoo.converter_version": str(CONVERTER_VERSION)}
        if source_sha256:
            metadata["zoo.source_sha256"] = source_sha256
        hash_data = any(_key(p) not in known for p in bundle.data_files)
        with staged_output(out, kind="conversion") as staged:
            params, digests = _write_weights(staged, bundle, the_plan, dtype, metadata, emit, label, hash_data)
            staged.write_json(CONFIG, model_config.to_dict(), "config")
            staged.write_text(VOCAB, vocab_data.text(), "vocab")
            inputs = _hash_inputs(bundle, release, digests, known)
            staged.receipt.update(_receipt(scheme, model_config, the_plan, inputs, params, dtype,
                                           vocab_data, source_sha256))
    finally:
        bundle.close()
    emit(ProgressEvent("done", label))
    log.info("wrote %s (%d parameters)", out, params)
    return out


def _receipt(scheme: str, config: ModelConfig, the_plan: Plan, inputs: list[dict[str, Any]],
             params: int, dtype: str | None, vocab: Vocab, source_sha256: str | None) -> dict[str, Any]:
    return {
        "converter_version": CONVERTER_VERSION,
        "scheme": scheme,
        "architecture": config.architecture,
        "source_sha256": source_sha256,
        "inputs": inputs,
        "dtype": dtype or "as stored",
        "parameters": params,
        "tensors": len(the_plan.targets),
        "heads": sorted(head for head, present in the_plan.heads.items() if present),
        "task": config.task,
        "skipped": {"count": len(the_plan.skipped_names), "by_kind": the_plan.skipped,
                    "names": the_plan.skipped_names},
        # upstream releases do not record do_lower_case; loaders of a plain converted directory use this
        "tokenizer": {"lowercase": not looks_cased(vocab.tokens), "strip_accents": None,
                      "inferred_from": "vocab"},
        "vocab": {"tokens": len(vocab.tokens),
                  "duplicates": {str(k): v for k, v in vocab.duplicates.items()},
                  "duplicate_policy": "dropped (ALBERT ids follow first appearance; the last ids, left "
                                      "free, are [zoo-unused-<id>])" if vocab.compact
                  else "replaced by placeholders (BERT ids follow lines)",
                  "empty_lines": vocab.empty},
    }


__all__ = ["LABELS_FILE", "Release", "convert", "convert_release", "find_release", "load_config", "parse_config",
           "read_labels", "with_classifier"]
