"""The local cache: downloads, extracted snapshots, conversions, pins, locks — and keeping them honest.

Every entry appears by an atomic rename of something complete, then a marker written last that records each
file's sha256, size and stat stamp. A hit compares stamps (one ``stat`` per file) and re-hashes what changed;
``zoo verify`` re-hashes everything. Locks save bandwidth and CPU and keep housekeeping away from entries in
use; correctness never depends on them. Modules: :mod:`~zoo.cache.paths`
(where everything lives), :mod:`~zoo.cache.records` (stamps and checks), :mod:`~zoo.cache.snapshots`,
:mod:`~zoo.cache.conversions`, :mod:`~zoo.cache.folders` (stamps of verified folders outside the cache),
:mod:`~zoo.cache.blobs`, :mod:`~zoo.cache.pins`, :mod:`~zoo.cache.locks`,
:mod:`~zoo.cache.housekeeping` (ls, rm, prune, verify).
"""

from zoo.cache.blobs import add_blob, quarantine, recheck_blob, verified_blob
from zoo.cache.conversions import Conversion, commit_conversion, conversions, read_conversion
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
from zoo.cache.pins import Pin, download_size, get_pin, record_pin
from zoo.cache.records import Check, FileRecord, Marked, Stamp
from zoo.cache.snapshots import Snapshot, cached_snapshot, commit_snapshot, new_snapshot, read_snapshot, snapshots

__all__ = [
    "KINDS", "Check", "Conversion", "Entry", "FileRecord", "FolderStamp", "Marked", "Pin", "Problem", "Snapshot",
    "Stamp", "add_blob", "blob_path", "cached_snapshot", "check_folder", "commit_conversion", "commit_snapshot",
    "conversion_lock", "conversions", "converted_path", "download_lock", "download_size", "ensure_home", "entries",
    "get_pin", "home", "lock", "new_snapshot", "partial_dir", "prune", "quarantine",
    "read_conversion", "read_snapshot", "recheck_blob", "record_folder", "record_pin", "remove", "snapshot_lock",
    "snapshots", "source_key", "staging_dir", "total_size", "try_lock", "url_key", "verified_blob", "verify",
]
