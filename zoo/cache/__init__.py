"""The local cache: downloads, extracted snapshots, conversions, pins, locks — and keeping them honest.

Every entry appears by an atomic rename of something complete, then a marker written last that records each
file's sha256, size and stat stamp. A hit compares stamps (one ``stat`` per file) and re-hashes what changed;
``zoo verify`` re-hashes everything. Locks save bandwidth and CPU and keep housekeeping away from entries in
use; correctness never depends on them. Modules: :mod:`~zoo.cache.paths` (the
layout), :mod:`~zoo.cache.records` (stamps and checks), :mod:`~zoo.cache.snapshots`,
:mod:`~zoo.cache.conversions`, :mod:`~zoo.cache.folders` (stamps of verified folders outside the cache),
:mod:`~zoo.cache.blobs`, :mod:`~zoo.cache.pins`, :mod:`~zoo.cache.locks`,
:mod:`~zoo.cache.housekeeping` (ls, rm, prune, verify).
"""

from zoo.cache.blobs import add_blob, quarantine, verified_blob
from zoo.cache.conversions import (
    Conversion,
    check_conversion,
    commit_conversion,
    conversions,
    invalidate_conversion,
    read_conversion,
    touch_conversion,
)
from zoo.cache.folders import FolderStamp, check_folder, record_folder
from zoo.cache.housekeeping import KINDS, Entry, Problem, entries, prune, remove, total_size, verify
from zoo.cache.locks import lock, try_lock
from zoo.cache.paths import (
    blob_path,
    conversion_lock,
    converted_path,
    download_lock,
    ensure_home,
    home,
    partial_dir,
    snapshot_lock,
    source_key,
    staging_dir,
    url_key,
)
from zoo.cache.pins import Pin, download_size, file_pin_label, get_pin, record_pin
from zoo.cache.records import Check, FileRecord, Stamp
from zoo.cache.snapshots import (
    Snapshot,
    cached_snapshot,
    check_snapshot,
    commit_snapshot,
    invalidate,
    new_snapshot,
    read_snapshot,
    snapshots,
    touch,
)

__all__ = [
    "KINDS", "Check", "Conversion", "Entry", "FileRecord", "FolderStamp", "Pin", "Problem", "Snapshot", "Stamp",
    "add_blob", "blob_path", "cached_snapshot", "check_conversion", "check_folder", "check_snapshot",
    "commit_conversion", "commit_snapshot", "conversion_lock", "conversions", "converted_path", "download_lock",
    "download_size", "ensure_home", "entries", "file_pin_label", "get_pin", "home", "invalidate",
    "invalidate_conversion", "lock", "new_snapshot", "partial_dir", "prune", "quarantine", "read_conversion",
    "read_snapshot", "record_folder", "record_pin", "remove", "snapshot_lock", "snapshots", "source_key",
    "staging_dir", "total_size", "touch", "touch_conversion", "try_lock", "url_key", "verified_blob", "verify",
]
