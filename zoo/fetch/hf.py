"""``hf:`` sources: files in a Hugging Face repo (or any Hub-compatible mirror), verified by zoo's own sha256.

huggingface_hub does the transfer, so ``HF_ENDPOINT`` (read at call time), ``HF_TOKEN`` and the usual proxy
variables apply. It names blobs by their hash but never re-hashes them, so every file is hashed here and
compared with the manifest's ``files:`` pins; a file the manifest leaves unpinned is pinned on first use in
the cache's pin store, and a later download must match. The verified files become an ordinary cache snapshot
whose ``sha256`` is the *combined hash*: the sha256 of the ``sha256sum``-style listing of its files::

    printf '%s  %s\\n' <sha256> <path> ...   (sorted by path)  | sha256sum

:func:`ensure_converted` turns a snapshot (transformers names, ``format: safetensors`` or ``pytorch``) into
zoo's converted layout once: ``pytorch_model.bin`` is read with ``torch.load(weights_only=True)`` — never
unpickled with code execution — and stored as safetensors under canonical names, its shapes checked against
the manifest's config.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from zoo import cache
from zoo.config import ModelConfig
from zoo.errors import CheckpointError, IntegrityError, NetworkError, OfflineError, UnsupportedError
from zoo.fetch.base import ProgressCallback, ProgressEvent

if TYPE_CHECKING:
    import torch

    from zoo.registry.schema import Manifest, Source

log = logging.getLogger("zoo.fetch.hf")

#: Bump when the output of :func:`ensure_converted` changes: conversions are cached by it.
CONVERTER_VERSION = 1


def wanted_files(source: Source) -> list[str]:
    """Every repo file the source needs: its pinned ``files`` plus checkpoint and vocab."""
    return sorted(set(source.files) | {str(source.checkpoint), str(source.vocab)})


def combined_sha256(files: Mapping[str, str]) -> str:
    """sha256 of the ``sha256sum`` listing (``<hex>  <path>\\n``, sorted by path) of ``{path: sha256}``."""
    listing = "".join(f"{sha}  {rel}\n" for rel, sha in sorted(files.items()))
    return hashlib.sha256(listing.encode()).hexdigest()


def pin_label(source: Source, rel: str) -> str:
    """The pin-store key of one file of an hf source."""
    return f"{source.label}/{rel}"


# ---------------------------------------------------------------------------------------------- download
def download(source: Source, target: Path, *, progress: ProgressCallback | None = None,
             label: str | None = None) -> dict[str, tuple[str, int]]:
    """Download the source's files into ``target`` and verify them; returns ``{path: (sha256, size)}``.

    A file that disagrees with its pin (manifest or trust-on-first-use) is quarantined and raises
    :class:`~zoo.errors.IntegrityError`; transfer failures raise :class:`~zoo.errors.NetworkError`.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError

    repo = str(source.hf)
    if not source.revision_is_commit:
        log.warning("%s: revision %r is not a 40-hex commit; a branch or tag can move, so this download is not "
                    "reproducible (pin the commit in the manifest)", repo, source.revision or "main")
    emit = progress or (lambda event: None)
    label = label or source.label
    endpoint = os.environ.get("HF_ENDPOINT") or None  # at call time: huggingface_hub reads it only on import
    got: dict[str, tuple[str, int]] = {}
    with tempfile.TemporaryDirectory(prefix="hf-", dir=target.parent) as scratch:
        for rel in wanted_files(source):
            emit(ProgressEvent("download", label, message=rel))
            try:
                path = Path(hf_hub_download(repo, rel, revision=source.revision, endpoint=endpoint,
                                            local_dir=scratch, tqdm_class=_forwarding_tqdm(emit, label, rel)))
            except EntryNotFoundError:
                raise NetworkError(f"{source.label}: the repo has no file {rel!r}",
                                   hint="check the manifest's files/checkpoint/vocab and revision") from None
            except LocalEntryNotFoundError as exc:
                raise NetworkError(f"{source.label}: cannot reach {endpoint or 'the Hub'} for {rel}: {exc}",
                                   hint="check the network, HF_ENDPOINT and proxy settings") from None
            except HfHubHTTPError as exc:
                raise NetworkError(f"{source.label}: {rel}: {_first_line(exc)}",
                                   hint="a private or gated repo needs HF_TOKEN; check the repo id and "
                                        "revision") from None
            emit(ProgressEvent("verify", label, message=rel))
            sha, size = cache.hash_file(path)
            _check_pin(source, rel, path, sha, size)
            dest = target / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, dest)
            got[rel] = (sha, size)
    for rel, (sha, size) in got.items():  # only once everything verified
        if not (source.files.get(rel) and source.files[rel].sha256) and cache.get_pin(pin_label(source, rel)) is None:
            cache.record_pin(pin_label(source, rel), sha, size)
            log.info("recorded trust-on-first-use pin for %s: sha256 %s", pin_label(source, rel), sha)
    return got


def _check_pin(source: Source, rel: str, path: Path, sha: str, size: int) -> None:
    pin = source.files.get(rel)
    tofu = None if pin and pin.sha256 else cache.get_pin(pin_label(source, rel))
    expected_sha = pin.sha256 if pin and pin.sha256 else (tofu.sha256 if tofu else None)
    expected_size = pin.size if pin and pin.size is not None else (tofu.size if tofu else None)
    problem = None
    if expected_size is not None and size != expected_size:
        problem = f"size {size} bytes, expected {expected_size}"
    elif expected_sha is not None and sha != expected_sha:
        problem = f"sha256 {sha}, expected {expected_sha}"
    if problem is None:
        return
    where = cache.quarantine(path, f"{source.label}: {rel}: {problem}")
    if tofu is not None:
        raise IntegrityError(
            f"{source.label}: {rel} changed upstream: {problem} (trust-on-first-use pin recorded "
            f"{time.strftime('%Y-%m-%d', time.localtime(tofu.recorded))}); quarantined at {where}",
            hint="if the new file is legitimate, pin its sha256 in the manifest's files:")
    raise IntegrityError(f"{source.label}: {rel}: {problem}; quarantined at {where}",
                         hint="the repo serves different bytes than the manifest pins: a tampered mirror, or "
                              "the manifest names a moving revision")


def pull(manifest: Manifest, source: Source, key: str, *, offline: bool = False,
         progress: ProgressCallback | None = None) -> cache.Snapshot:
    """Download and verify an hf source into a new cache snapshot (the caller holds the snapshot lock)."""
    if offline:
        raise OfflineError(f"{source.label} is not in the cache and offline mode is on")
    staging = cache.staging_dir()
    try:
        target = staging / "snapshot"
        target.mkdir()
        got = download(source, target, progress=progress, label=manifest.name)
        records = {rel: cache.FileRecord(sha, size, cache.Stamp(0, 0, 0)) for rel, (sha, size) in got.items()}
        snap = cache.Snapshot(model=manifest.name, key=key, source=source.label,
                              sha256=combined_sha256({rel: sha for rel, (sha, _) in got.items()}),
                              size=sum(size for _, size in got.values()), archive="none", files=records,
                              created=time.time())
        cache.commit_snapshot(target, snap)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("%s: %d files verified (combined sha256 %s)", source.label, len(got), snap.sha256)
    return snap


def _forwarding_tqdm(emit: ProgressCallback, label: str, rel: str) -> type:
    """A silent tqdm class that reports huggingface_hub's byte counts as zoo progress events."""
    from tqdm.auto import tqdm

    class Forwarding(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.done = 0

        def update(self, n: float | None = 1) -> bool | None:
            self.done += int(n or 0)
            emit(ProgressEvent("download", label, self.done, self.total, message=rel))
            return None

    return Forwarding


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


# --------------------------------------------------------------------------------------------- convert
def ensure_converted(snapshot_dir: str | os.PathLike[str], *, manifest: Manifest, source: Source) -> Path:
    """zoo's converted directory for a pulled hf snapshot (transformers names), converting it on first use.

    Lives in ``zoo.cache.converted_dir(<combined sha256>, CONVERTER_VERSION)``: ``model.safetensors``
    (canonical names), ``config.json`` (the manifest's config), ``vocab.txt`` and ``receipt.json``.
    """
    from filelock import FileLock

    snapshot = Path(snapshot_dir)
    hashes = _snapshot_hashes(manifest, source, snapshot)
    combined = combined_sha256(hashes)
    target = cache.converted_dir(combined, CONVERTER_VERSION)
    if (target / "receipt.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "receipt.json").is_file():
            return target
        if target.exists():
            shutil.rmtree(target)  # a crashed conversion: complete outputs always hold receipt.json
        _convert(snapshot, target, manifest, source, hashes, combined)
    return target


def _snapshot_hashes(manifest: Manifest, source: Source, snapshot: Path) -> dict[str, str]:
    """``{path: sha256}`` of the snapshot's files: from the cache marker when it is this snapshot, else hashed."""
    snap = cache.read_snapshot(manifest.name, cache.source_key(source))
    if snap is not None and snap.path == snapshot and cache.check_snapshot(snap):
        return {rel: record.sha256 for rel, record in snap.files.items()}
    return {rel: cache.hash_file(snapshot / rel)[0] for rel in wanted_files(source) if (snapshot / rel).is_file()}


def read_state(path: Path, fmt: str) -> dict[str, torch.Tensor]:
    """A transformers checkpoint file as a state dict: safetensors, or a pickle read with ``weights_only``."""
    import pickle

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        if fmt == "safetensors":
            return load_file(str(path))
        # weights_only: tensors and plain containers only; anything else (code) is refused, never run
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except (SafetensorError, pickle.UnpicklingError, RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable {fmt} checkpoint: {_first_line(exc)}",
                              hint="a pytorch_model.bin holding anything but tensors is refused on purpose"
                              if fmt == "pytorch" else "the file is damaged or truncated") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a mapping of parameter names to tensors")
    return {_modern_name(str(k)): v for k, v in state.items()}


def _modern_name(name: str) -> str:
    """pytorch-pretrained-bert era checkpoints call LayerNorm parameters gamma/beta."""
    for old, new in ((".gamma", ".weight"), (".beta", ".bias")):
        if "LayerNorm" in name and name.endswith(old):
            return name.removesuffix(old) + new
    return name


def expected_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Canonical name → shape for ``config`` with the pretraining heads (built on the meta device)."""
    import torch

    from zoo.models.encoder import Encoder

    with torch.device("meta"):
        model = Encoder(config, heads="pretraining")
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_shapes(state: Mapping[str, torch.Tensor], config: ModelConfig, origin: str) -> None:
    """Every encoder tensor present with the shape ``config`` implies; heads may be absent, nothing extra."""
    expected = expected_shapes(config)
    heads = ("mlm.", "seq_relationship.")
    missing = sorted(k for k in expected if k not in state and not k.startswith(heads))
    unexpected = sorted(k for k in state if k not in expected)
    wrong = [f"{k} {list(state[k].shape)} (config implies {list(shape)})"
             for k, shape in expected.items() if k in state and tuple(state[k].shape) != shape]
    problems = []
    if missing:
        problems.append(f"missing {', '.join(missing[:5])}{' …' if len(missing) > 5 else ''}")
    if unexpected:
        problems.append(f"unexpected {', '.join(unexpected[:5])}{' …' if len(unexpected) > 5 else ''}")
    if wrong:
        problems.append(f"wrong shapes: {'; '.join(wrong[:5])}{' …' if len(wrong) > 5 else ''}")
    if problems:
        raise CheckpointError(f"{origin}: the weights do not match the {config.architecture} config: "
                              + "; ".join(problems), hint="the manifest's config describes another model")


def _convert(snapshot: Path, target: Path, manifest: Manifest, source: Source, hashes: dict[str, str],
             combined: str) -> None:
    from safetensors.torch import save_file

    from zoo import __version__
    from zoo.converters import hf_names
    from zoo.converters.vocab import read_vocab

    config = manifest.config
    if config.architecture == "albert-brightmart":
        raise UnsupportedError(f"{manifest.name}: an hf source holds a transformers ALBERT or BERT, not brightmart's "
                               "architecture", hint="describe it with scheme-free family albert and "
                                                    "embedding_size = hidden_size (as zoo export writes it)")
    weights = source.find_checkpoint(snapshot)
    log.info("converting %s (%s) once into %s", weights, source.format, target)
    state = hf_names.from_transformers(read_state(weights, source.format), config)
    check_shapes(state, config, str(weights))
    vocab_file = source.find_vocab(snapshot)
    vocab = read_vocab(vocab_file)
    if len(vocab.tokens) > config.vocab_size:
        raise CheckpointError(f"{vocab_file}: {len(vocab.tokens)} tokens, but the manifest's vocab_size is "
                              f"{config.vocab_size}", hint="the vocab belongs to another model")
    if len(vocab.tokens) < config.vocab_size:
        log.warning("%s: %d tokens for vocab_size %d; ids above %d are never produced", vocab_file,
                    len(vocab.tokens), config.vocab_size, len(vocab.tokens) - 1)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        tensors = {name: t.contiguous() for name, t in state.items()}
        save_file(tensors, str(tmp / "model.safetensors"),
                  metadata={"format": "pt", "zoo.source": source.label, "zoo.source_sha256": combined})
        (tmp / "config.json").write_text(json.dumps(config.to_dict(), indent=2) + "\n", encoding="utf-8")
        (tmp / "vocab.txt").write_text(vocab.text(), encoding="utf-8")
        receipt = {
            "zoo_version": __version__,
            "converter_version": CONVERTER_VERSION,
            "format": source.format,
            "architecture": config.architecture,
            "source": source.label,
            "source_sha256": combined,
            "inputs": [{"path": rel, "sha256": sha} for rel, sha in sorted(hashes.items())],
            "outputs": [{"path": name, "sha256": cache.hash_file(tmp / name)[0]}
                        for name in ("model.safetensors", "config.json", "vocab.txt")],
            "parameters": sum(t.numel() for t in tensors.values()),
            "tensors": len(tensors),
            "heads": sorted({name.split(".")[0] for name in tensors if name.startswith(("mlm.", "seq_relationship."))}),
            "tokenizer": {"lowercase": manifest.tokenizer.lowercase,
                          "strip_accents": manifest.tokenizer.strip_accents},
        }
        (tmp / "receipt.json").write_text(json.dumps(receipt, indent=2, ensure_ascii=False) + "\n",
                                          encoding="utf-8")
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
