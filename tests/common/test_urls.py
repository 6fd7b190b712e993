"""Redis URLs as shown: redact, scrub, and the checks made before connecting."""

from __future__ import annotations

import logging
import sys

import pytest
from balancer.common import logs, urls
from balancer.common.connection import Unreachable, connect, explain, reach


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
    ("redis://worker:pw-123@host:6379/0", "redis://worker:***@host:6379/0"),
    ("redis://:pw-123@host:6379/0", "redis://:***@host:6379/0"),
    ("redis://pw-123@host:6379", "redis://***@host:6379"),  # a password without a user
    ("rediss://u:p%40ss@host:6380/0?ssl_ca_certs=/etc/ca.pem",
     "rediss://u:***@host:6380/0?ssl_ca_certs=/etc/ca.pem"),
    ("rediss://u:pw@host/0?ssl_ca_certs=/certs@2/ca.pem",
     "rediss://u:***@host/0?ssl_ca_certs=/certs@2/ca.pem"),
    ("redis://host/0?password=pw-123&db=1&ssl_password=kpw",
     "redis://host/0?password=***&db=1&ssl_password=***"),
    ("unix://:pw-123@/run/redis.sock?db=0", "unix://:***@/run/redis.sock?db=0"),
    # Unescaped "/", "?", "#" or "@" in the password: all of it up to the last "@" goes.
    ("redis://u:pa/ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("redis://u:pa?ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("redis://u:pa#ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("redis://u:p@ss@host:6379/0", "redis://u:***@host:6379/0"),
    ("memory://embedded", "memory://embedded"),
    ("not a url", "not a url"),
])
def test_redact_masks_every_password_and_nothing_else(url: str, shown: str) -> None:
    assert urls.redact(url) == shown


def test_secrets_are_the_password_as_written_and_decoded() -> None:
    assert urls.secrets("redis://u:p%40ss%2Fw@h/0?ssl_password=k%20p") == {
        "p%40ss%2Fw", "p@ss/w", "k%20p", "k p"}
    assert urls.secrets("redis://h:6379/0") == set()


def test_remembered_secrets_are_scrubbed_from_text_and_log_lines(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(urls, "_secrets", set())
    urls.remember("redis://u:Hunter%2F22@h/0")
    urls.remember("redis://u:ab@h/0")  # too short to scrub from free text
    assert urls.scrub("auth Hunter/22 failed; Hunter%2F22; ab") == "auth *** failed; ***; ab"
    try:
        raise ValueError("Hunter/22")
    except ValueError:
        record = logging.LogRecord("balancer", logging.ERROR, "", 0, "with %s",
                                   ("Hunter%2F22",), sys.exc_info())
    line = logs.ScrubbingFormatter(logs.FORMAT).format(record)
    assert "Hunter" not in line and "with ***" in line and "ValueError: ***" in line


@pytest.mark.parametrize(("url", "says"), [
    ("redis://u:pa/ss@h:6379/0", "percent-encode"),
    ("redis://h:6379/0?ssl_ca_certs=/etc/hosts", "needs a TLS URL"),
    ("rediss://h:6379/0?ssl_ca_certs=/no/such/ca.pem", "no such file"),
    ("rediss://:pw-123@h:6379/0?ssl_ca_cert=/etc/hosts", "cannot take"),
    ("rediss://:pw-123@h:6379/0?ssl_cert_reqs=maybe", "cannot take"),
])
def test_a_url_redis_py_would_misread_is_refused_before_connecting(url: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        connect(url)
    assert "pw-123" not in str(caught.value) and "pa/ss" not in str(caught.value)
    with pytest.raises(Unreachable, match=says):
        reach(url)


def test_the_memory_scheme_is_untouched() -> None:
    client = connect("memory://test-urls")
    assert client.ping()


@pytest.mark.parametrize(("url", "reason", "hint"), [
    ("rediss://h:1/0", "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed",
     "give that CA with ?ssl_ca_certs=PATH"),
    ("rediss://h:1/0?ssl_ca_certs=ca.pem", "Error 8 while writing to socket. EOF occurred",
     "require a client certificate"),
    ("redis://h:1/0", "Error while reading from h:1 : (104, 'Connection reset by peer')",
     "use a rediss:// URL"),
])
def test_tls_mistakes_come_with_a_hint(url: str, reason: str, hint: str) -> None:
    said = explain(url, ConnectionError(reason))
    assert said.startswith(f"cannot reach Redis at {url}: ") and hint in said
    assert "\n" not in said
