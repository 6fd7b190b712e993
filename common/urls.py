"""The one owner of how a Redis URL is shown: its password never appears.

Every log line, error message and CLI output that names the cluster shows ``redact(url)``.
Text that may carry a password some other way (an exception from redis-py, a traceback)
goes through ``scrub``, which removes every secret of every URL this process connected
with (``remember``); ``common.logs`` scrubs every log line. ``check`` refuses, before any
connection, a URL that redis-py would read differently from what its author meant (a
password with an unescaped "/", "?", "#" or "@", which would otherwise leak part of the
password as a host name into error messages) or could only refuse later and obscurely
(an unknown or misplaced query option).
"""

from __future__ import annotations

import os
import re
import threading
from urllib.parse import parse_qsl, unquote, unquote_plus, urlsplit

MASK = "***"
URL_HELP = ("Redis URL of the cluster: redis://HOST:6379/0, redis://USER:PASSWORD@HOST:6379/0"
            " (an ACL user), rediss://HOST:6380/0?ssl_ca_certs=CA.pem (TLS; add"
            " &ssl_certfile=CERT.pem&ssl_keyfile=KEY.pem for a client certificate),"
            " redis+sentinel://HOST:26379,HOST:26379/SERVICE (behind Sentinel),"
            " redis+cluster://HOST:6379,HOST:6379 (Redis Cluster; rediss+...: TLS)."
            " Default: $BALANCER_REDIS_URL, else redis://127.0.0.1:6379/0.")
# The schemes redis-py reads, and Sentinel's and Cluster's (common.topology; memory:// is
# ours, handled before any of this).
SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster",
           "rediss+cluster")
# Query options whose value is a secret (redis-py reads them as connection arguments).
SECRET_OPTIONS = ("password", "ssl_password", "sentinel_password")
# Query options naming a file that must exist (checked before connecting: a clear error).
FILE_OPTIONS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_ca_path")
# A secret shorter than this is not scrubbed from free text: every "a" of a log line would
# go. URLs still show it masked (``redact``), whatever its length.
MIN_SCRUBBED = 4

_SECRET_QUERY = re.compile(r"(^|&)((?:" + "|".join(SECRET_OPTIONS) + r")=)[^&#]*")
_lock = threading.Lock()
_secrets: set[str] = set()


def _split(url: str) -> tuple[str, str | None, str] | None:
    """(scheme://, userinfo or None, the rest after it), or None when ``url`` has no
    scheme. When the standard reading is ambiguous (an "@" after the authority, or a
    userinfo cut short by "/", "?" or "#"), everything up to the last "@" counts as
    userinfo: more is masked than needed, never less."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    if "@" not in rest:
        return scheme + sep, None, rest
    netloc = _plain_netloc(url)
    if netloc is not None and rest.startswith(netloc):
        userinfo, _, hostport = netloc.rpartition("@")
        return scheme + sep, userinfo, hostport + rest[len(netloc):]
    userinfo, _, tail = rest.rpartition("@")
    return scheme + sep, userinfo, tail


def _plain_netloc(url: str) -> str | None:
    """The authority when the standard reading is the only one: it holds the userinfo
    (up to its last "@"), and no "@" follows in the path or fragment (one in the query
    is part of a file name). None otherwise."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if "@" in parts.netloc and "@" not in parts.path and not parts.fragment:
        return parts.netloc
    return None


def redact(url: str) -> str:
    """``url`` with its password (and ``password=``/``ssl_password=`` options) as ***:
    ``redis://user:***@host:6379/0``. A userinfo without ":" is masked whole (it may be
    a password given without a user)."""
    split = _split(url)
    if split is None:
        return url
    head, userinfo, tail = split
    path, q, query = tail.partition("?")
    shown = head
    if userinfo is not None:
        user, colon, _ = userinfo.partition(":")
        shown += (f"{user}:{MASK}" if colon else MASK) + "@"
    return shown + path + q + _SECRET_QUERY.sub(rf"\g<1>\g<2>{MASK}", query)


def secrets(url: str) -> set[str]:
    """Every form in which ``url``'s secrets could appear in text: as written, and
    decoded."""
    split = _split(url)
    if split is None:
        return set()
    _, userinfo, tail = split
    found: set[str] = set()
    if userinfo is not None:
        _, colon, password = userinfo.partition(":")
        found |= {password, unquote(password)} if colon else {userinfo, unquote(userinfo)}
    query = tail.partition("?")[2]
    for match in _SECRET_QUERY.finditer(query):
        raw = query[match.end(2):match.end()]
        found |= {raw, unquote_plus(raw)}
    return {s for s in found if s}


def remember(url: str) -> None:
    """From now on ``scrub`` removes ``url``'s secrets from any text."""
    found = {s for s in secrets(url) if len(s) >= MIN_SCRUBBED}
    if found - _secrets:
        with _lock:
            _secrets.update(found)


def scrub(text: str) -> str:
    """``text`` with every remembered secret replaced by ***."""
    for secret in sorted(_secrets, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def check(url: str) -> None:
    """Refuse what redis-py would misread or only refuse later, obscurely: ValueError,
    whose message shows the URL redacted."""
    split = _split(url)
    if split is None or split[0][:-3].lower() not in SCHEMES:
        # Without a scheme, nothing tells a password apart: the URL is not shown.
        shown = f"the Redis URL {redact(url)}" if split is not None else "a Redis URL"
        raise ValueError(f"{shown} must start with redis://, rediss:// (TLS), unix://,"
                         " redis+sentinel:// or redis+cluster:// (rediss+...: TLS)"
                         " (memory:// for an embedded cluster in client code)")
    if split[1] is not None and _plain_netloc(url) is None:
        raise ValueError(
            f"the user or password in the Redis URL {redact(url)} holds an unescaped '/',"
            " '?', '#' or '@': percent-encode them (%2F, %3F, %23, %40)")
    scheme = split[0][:-3].lower()
    for name, value in parse_qsl(urlsplit(url).query, keep_blank_values=True):
        if name.startswith("ssl_") and not scheme.startswith("rediss"):
            raise ValueError(f"{name} needs a TLS URL (rediss://, rediss+sentinel://,"
                             f" rediss+cluster://), not {redact(url)}")
        if name in FILE_OPTIONS and not os.path.exists(value):
            raise ValueError(f"{name}={value} in the Redis URL: no such file")
