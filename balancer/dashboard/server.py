"""The dashboard's HTTP server: the page and its static files, a JSON API the page polls,
the actions (POST, with the token), and /metrics.

Built on the standard library's ``ThreadingHTTPServer``: the dashboard serves a handful
of JSON routes to a few operators, which needs no framework, no template engine and no
dependency to keep patched. The page is static HTML, CSS and JavaScript shipped in the
package (no CDN, no build step) and builds every piece of data into the page as text,
never as HTML, so a task name or an error message cannot inject markup.

Defences, since anything shown comes from Redis, whose writers may be hostile:
- binds 127.0.0.1 unless told otherwise, and answers only requests whose Host header names
  the address it serves (a DNS-rebinding page cannot read the API);
- actions only by POST with a JSON body and the token in the ``X-Balancer-Token`` header
  (which a cross-site form cannot send), compared in constant time; without a token
  configured the dashboard is read-only and every action is refused;
- a Content-Security-Policy that allows only the page's own script and style.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import re
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlsplit

import redis
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from balancer import admin
from balancer import status as status_view
from balancer.common import partitions
from balancer.common.keys import Keys
from balancer.common.models import FlowState
from balancer.common.scripts import Scripts
from balancer.common.settings import Settings
from balancer.dashboard import actions, flowpage, overview
from balancer.dashboard.feed import Feed
from balancer.dashboard.metrics import registry_for

log = logging.getLogger("balancer.dashboard")

STATIC = {"index.html": "text/html; charset=utf-8", "app.js": "text/javascript; charset=utf-8",
          "markdown.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
MAX_BODY = 64 * 1024
# The states the recent flows may be listed by (/api/overview?state=failed).
FLOW_STATES = frozenset({*FlowState.FINISHED, FlowState.RUNNING})
TOKEN_HEADER = "X-Balancer-Token"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
       " connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
FLOW_ID = re.compile(r"^[0-9A-Za-z_-]{1,64}$")
ANY_HOST = ("0.0.0.0", "::", "")


def _finite(value: Any) -> Any:
    """JSON for a browser: no NaN or Infinity (JSON has none), recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _static(name: str) -> bytes:
    return (resources.files("balancer.dashboard") / "static" / name).read_bytes()


class Dashboard:
    """The server's state: Redis, the events feed, the metrics registry, the token."""

    def __init__(self, client: redis.Redis, settings: Settings, host: str = "127.0.0.1",
                 port: int = 8000) -> None:
        self.client = client
        self.settings = settings
        self.keys = Keys(settings.namespace)
        self.registry, fed = registry_for(client, self.keys, settings.leader_ttl,
                                          settings.metrics_task_labels)
        self.feed = Feed(client, self.keys, fed)
        self.context = actions.Context(client, self.keys, Scripts(client, self.keys),
                                       settings)
        self.token = settings.dashboard_token.encode()
        self.host = host
        self.httpd = ThreadingHTTPServer((host, port), _handler(self))
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ANY_HOST else self.host
        return f"http://{host if ':' not in host else f'[{host}]'}:{self.port}/"

    def allowed_host(self, header: str | None) -> bool:
        if self.host in ANY_HOST:
            return True
        if not header:
            return False
        names = {self.host, "localhost", "127.0.0.1", "[::1]"}
        if ":" in self.host:
            names.add(f"[{self.host}]")
        return header in {f"{n}:{self.port}" for n in names} | (
            names if self.port == 80 else set())

    def token_ok(self, given: str | None) -> bool:
        return bool(self.token) and given is not None and hmac.compare_digest(
            given.encode(), self.token)

    def start(self) -> None:
        """Serve in a background thread (tests); ``serve_forever`` blocks instead."""
        self.feed.start()
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True,
                                        name="dashboard-http")
        self._thread.start()

    def serve_forever(self) -> None:
        self.feed.start()
        self.httpd.serve_forever()

    def stop(self) -> None:
        self.feed.stop()
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(5)
        self.feed.join(5)


def _handler(app: Dashboard) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "balancer-dashboard"
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, content_type: str,
                  cache: bool = False) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Content-Security-Policy", CSP)
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cache-Control", "max-age=60" if cache else "no-store")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, data: Any) -> None:
            body = json.dumps(_finite(data), allow_nan=False).encode()
            self._send(status, body, "application/json")

        def _error(self, status: int, message: str) -> None:
            self._json(status, {"error": message})

        def _guard(self) -> bool:
            if not app.allowed_host(self.headers.get("Host")):
                self._error(HTTPStatus.MISDIRECTED_REQUEST,
                            "this dashboard does not serve that host name")
                return False
            return True

        def do_GET(self) -> None:
            if not self._guard():
                return
            path = self.path.split("?", 1)[0]
            try:
                if path == "/":
                    self._send(200, _static("index.html"), STATIC["index.html"])
                elif path.startswith("/static/") and path[8:] in STATIC:
                    self._send(200, _static(path[8:]), STATIC[path[8:]], cache=True)
                elif path == "/favicon.ico":
                    self._send(204, b"", "image/x-icon", cache=True)
                elif path == "/metrics":
                    self._send(200, generate_latest(app.registry), CONTENT_TYPE_LATEST)
                elif path == "/api/overview":
                    state = parse_qs(urlsplit(self.path).query).get("state", [None])[0]
                    if state is not None and state not in FLOW_STATES:
                        self._error(400, f"state is one of {', '.join(sorted(FLOW_STATES))}")
                        return
                    data = overview.gather(app.client, app.keys, app.settings,
                                           only=status_view.FlowFilter(state))
                    data.update(app.feed.snapshot())
                    data["namespace"] = app.settings.namespace
                    data["actions"] = bool(app.token)
                    self._json(200, data)
                elif path.startswith("/api/flow/"):
                    flow_id = path[len("/api/flow/"):]
                    if not FLOW_ID.match(flow_id):
                        self._error(400, "a flow id is letters, digits, - and _")
                        return
                    data = flowpage.gather(app.client, partitions.flow_keys(app.keys, flow_id),
                                           flow_id)
                    data["namespace"] = app.settings.namespace
                    data["actions"] = bool(app.token)
                    self._json(200, data)
                else:
                    self._error(404, "no such page")
            except flowpage.NoSuchFlow as exc:
                self._error(404, f"no flow run {exc} (finished runs expire after"
                                 f" {app.settings.result_ttl:.0f}s)")
            except redis.RedisError as exc:
                log.warning("dashboard: Redis error serving %s: %s", path, exc)
                self._error(503, f"Redis: {exc}")

        do_HEAD = do_GET

        def do_POST(self) -> None:
            self.close_connection = True  # a refused body is never read: no reuse
            if not self._guard():
                return
            path = self.path.split("?", 1)[0]
            if not path.startswith("/api/action/"):
                self._error(404, "no such action")
                return
            if not app.token:
                self._error(403, "the dashboard is read-only: start it with"
                                 " BALANCER_DASHBOARD_TOKEN set to allow actions")
                return
            if not app.token_ok(self.headers.get(TOKEN_HEADER)):
                self._error(403, f"a wrong or missing token ({TOKEN_HEADER} header)")
                return
            if self.headers.get_content_type() != "application/json":
                self._error(415, "send the action's fields as application/json")
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY:
                self._error(413, f"a body of at most {MAX_BODY} bytes")
                return
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except (ValueError, UnicodeDecodeError):
                self._error(400, "the body is not JSON")
                return
            if not isinstance(body, dict):
                self._error(400, "the body must be a JSON object")
                return
            name = path[len("/api/action/"):]
            try:
                message = actions.run(app.context, name, body)
            except admin.AdminError as exc:
                self._error(400, str(exc))
                return
            except NotImplementedError as exc:
                self._error(501, str(exc))
                return
            except redis.RedisError as exc:
                self._error(503, f"Redis: {exc}")
                return
            log.info("dashboard action %s %s: %s", name, json.dumps(body)[:200], message)
            self._json(200, {"ok": True, "message": message})

    return Handler
