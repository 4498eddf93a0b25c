"""Fetchers: move one source's bytes onto local disk, hashing them on the way.

``http`` (parallel ranged parts, resume, retries), ``file`` (file:// copies), ``sources`` (dispatch by kind).
"""

from zoo.fetch.base import Download, FetchOptions, ProgressCallback, ProgressEvent
from zoo.fetch.sources import fetch

__all__ = ["Download", "FetchOptions", "ProgressCallback", "ProgressEvent", "fetch"]
