"""One cheap look at a server before a library that retries everything is let loose on it.

huggingface_hub retries a connection error five times with backoff (about 24 s) and then reports "cannot find
the requested files in the local cache". A host that does not resolve or refuses connections will do the same
on every retry, so :func:`check_reachable` asks once — name resolution, then a TCP connect — and turns those two
failures into a :class:`~zoo.errors.NetworkError` that names the host, in well under a second. Anything else
(a slow or TLS-broken server) is left to the real request. With a proxy configured for the URL, the proxy is
what is probed.
"""

from __future__ import annotations

import errno
import socket
import urllib.request
from urllib.parse import urlsplit

from zoo.errors import NetworkError

_UNREACHABLE = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.ENETDOWN, errno.EHOSTDOWN}
#: What to do when a download source cannot be reached (one text, so a list of failed sources says it once).
UNREACHABLE_HINT = ("check the network and proxy settings (and HF_ENDPOINT for hf: sources); to use only what is "
                    "cached set ZOO_OFFLINE=1 (--offline), or add a mirror source to the manifest")


def check_reachable(url: str, *, timeout: float, what: str, hint: str) -> None:
    """Raise :class:`NetworkError` (``what``: which server, for the message; ``hint``: what to do) when the host
    of ``url`` — or the proxy that would carry the request — does not resolve, refuses the connection, or cannot
    be routed to; return quietly otherwise."""
    parts = urlsplit(url)
    host = parts.hostname
    if not host:
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    target = what
    proxy = _proxy_for(parts.scheme, host)
    if proxy is not None:
        proxy_parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if not proxy_parts.hostname:
            return
        host, port = proxy_parts.hostname, proxy_parts.port or 8080
        target = f"the proxy for {what}"
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise NetworkError(f"cannot resolve the host {host} ({target}): {_why(exc)}", hint=hint) from None
    last: OSError | None = None
    for family, kind, proto, _, address in addresses:
        sock = socket.socket(family, kind, proto)
        sock.settimeout(timeout)
        try:
            sock.connect(address)
            return
        except ConnectionRefusedError as exc:
            last = exc
        except OSError as exc:
            if exc.errno not in _UNREACHABLE:
                return  # a timeout or something stranger: let the real request find out (and retry)
            last = exc
        finally:
            sock.close()
    if isinstance(last, ConnectionRefusedError):
        raise NetworkError(f"{host}:{port} refused the connection ({target})", hint=hint)
    if last is not None:
        raise NetworkError(f"cannot reach {host}:{port} ({target}): {_why(last)}", hint=hint)


def why_unreachable(exc: BaseException) -> str | None:
    """``"unresolved"`` or ``"refused"`` when an exception (from any HTTP library, through its chain of causes)
    says the host does not resolve or refuses connections — failures no retry can fix; else None."""
    chain = exception_chain(exc)
    text = " ".join(f"{type(e).__name__} {e}" for e in chain)
    if any(isinstance(e, socket.gaierror) for e in chain) or "NameResolutionError" in text \
            or "Name or service not known" in text or "Temporary failure in name resolution" in text:
        return "unresolved"
    if any(isinstance(e, ConnectionRefusedError) for e in chain) or "Connection refused" in text:
        return "refused"
    return None


def exception_chain(exc: BaseException, *, reasons: bool = True) -> list[BaseException]:
    """``exc`` and the exceptions behind it (at most 20, each once): causes, contexts, exceptions among its
    ``args`` and — with ``reasons`` — a ``reason`` attribute (urllib's and urllib3's errors wrap one there)."""
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo and len(chain) < 20:
        cause = todo.pop()
        if any(cause is seen for seen in chain):
            continue
        chain.append(cause)
        reason = getattr(cause, "reason", None) if reasons else None
        todo += [c for c in (cause.__cause__, cause.__context__, reason, *cause.args) if isinstance(c, BaseException)]
    return chain


def _proxy_for(scheme: str, host: str) -> str | None:
    proxies = urllib.request.getproxies()
    if not proxies or urllib.request.proxy_bypass(host):
        return None
    return proxies.get(scheme) or proxies.get("all")


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


__all__ = ["UNREACHABLE_HINT", "check_reachable", "exception_chain", "why_unreachable"]
