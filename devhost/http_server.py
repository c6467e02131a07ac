"""The HTTP front of the local host: route prefix, route templates, methods, `func.HttpRequest` in and
`func.HttpResponse` out, 404 for an unknown route and 405 (with `Allow`) for a known route's wrong method.

`authLevel` function/admin is not enforced, as with Core Tools' `func start`; the app authenticates its own
callers with bearer keys.
"""

from __future__ import annotations

import errno
import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

import azure.functions as func

from devhost.invoker import LoadedFunction
from devhost.routes import RouteTemplate

log = logging.getLogger("devhost")

# The Functions host refuses bodies over 100 MB (maxRequestBodySize).
MAX_BODY_BYTES = 100 * 1024 * 1024
_DECIMAL = re.compile(r"^[0-9]{1,20}\Z")
_HEX = re.compile(r"^[0-9a-fA-F]{1,16}\Z")


class PortInUse(Exception):
    """The local host cannot listen where it was asked to."""


class BadFraming(ValueError):
    """A request whose body length cannot be read: answered 400 and the connection closed."""


class _Server(ThreadingHTTPServer):
    # socketserver's backlog of 5 refuses connections that many clients open at once (they see resets).
    request_queue_size = 128


class HttpRoute:
    def __init__(self, function: LoadedFunction, prefix: str) -> None:
        trigger = function.spec.trigger
        route = trigger.get("route") or function.spec.name
        self.function = function
        self.template = RouteTemplate("/".join(part for part in (prefix, route.strip("/")) if part))
        self.methods = sorted(m.upper() for m in trigger.get(
            "methods", ["get", "post", "put", "delete", "patch", "head", "options", "trace"]))


# The host's own endpoints (/runtime/webhooks/...): (method, query, headers, body) -> (status, JSON document).
Webhook = Callable[[str, dict[str, str], dict[str, str], bytes], tuple[int, dict]]


class HttpFrontend:
    def __init__(self, routes: list[HttpRoute], host: str, port: int,
                 webhooks: dict[str, Webhook] | None = None) -> None:
        self.routes = sorted(routes, key=lambda r: r.template.sort_key)
        self.webhooks = {path.strip("/").lower(): handler for path, handler in (webhooks or {}).items()}
        frontend = self

        class Handler(_Handler):
            pass

        Handler.frontend = frontend
        try:
            self.server = _Server((host, port), Handler)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise PortInUse(f"port {port} on {host} is already in use (another local host?); stop what listens "
                            f"there or choose another port with --port (make serve PORT=...)") from None
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="devhost-http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=10)

    def resolve(self, method: str, path: str) -> tuple[int, HttpRoute | None, list[str], dict]:
        """(200, route, [], params) for a match; (405, None, allowed methods, {}) or (404, None, [], {})."""
        allowed: set[str] = set()
        for route in self.routes:
            params = route.template.match(path)
            if params is None:
                continue
            if method in route.methods:
                return 200, route, [], params
            allowed.update(route.methods)
        return (405 if allowed else 404), None, sorted(allowed), {}


class _Handler(BaseHTTPRequestHandler):
    frontend: HttpFrontend
    protocol_version = "HTTP/1.1"
    server_version = "EngagementExportDevHost"
    # Answers go out at once: with Nagle's algorithm on, a small answer waits for the client's delayed
    # acknowledgement of the previous one (up to 40 ms on Linux) on a kept-alive connection.
    disable_nagle_algorithm = True

    def log_message(self, format, *args):  # the invoker logs each invocation; no access log
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            total = 0
            while True:
                size_text = self.rfile.readline(64).split(b";")[0].strip().decode("latin-1")
                if not _HEX.match(size_text):
                    raise BadFraming(f"a chunk size must be hexadecimal digits, not {size_text[:20]!r}")
                size = int(size_text, 16)
                if size == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                total += size
                if total > MAX_BODY_BYTES:
                    raise OverflowError
                chunks.append(self.rfile.read(size))
                self.rfile.readline(8192)
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            return b""
        if len(set(lengths)) > 1 or not _DECIMAL.match(lengths[0].strip()):
            raise BadFraming(f"Content-Length must be one whole number of bytes, not {', '.join(lengths)[:40]!r}")
        length = int(lengths[0])
        if length > MAX_BODY_BYTES:
            raise OverflowError
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None) -> None:
        self.send_response(status)
        headers = dict(headers or {})
        for name, value in headers.items():
            if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _handle(self) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        try:
            body = self._read_body()
        except OverflowError:
            self.close_connection = True
            self._send_error(413, "RequestEntityTooLarge", f"the body is over {MAX_BODY_BYTES} bytes")
            return
        except BadFraming as error:
            self.close_connection = True
            self._send_error(400, "BadRequest", str(error))
            return
        webhook = self.frontend.webhooks.get(path.strip("/").lower())
        if webhook is not None:  # the host's endpoints come before the app's routes, as in the Functions host
            status, document = webhook(self.command, dict(parse_qsl(split.query, keep_blank_values=True)),
                                       dict(self.headers.items()), body)
            self._send(status, json.dumps(document).encode(), {"Content-Type": "application/json; charset=utf-8"})
            return
        status, route, allowed, params = self.frontend.resolve(self.command, path)
        if route is None:
            if status == 405:
                self._send_error(405, "MethodNotAllowed", f"{self.command[:20]} is not allowed on {path[:200]}",
                                 {"Allow": ", ".join(allowed)})
            else:
                self._send_error(404, "NotFound", f"no function serves {path[:200]}")
            return
        host = self.headers.get("Host") or f"127.0.0.1:{self.frontend.port}"
        request = func.HttpRequest(
            method=self.command,
            url=f"http://{host}{self.path}",
            headers={name: value for name, value in self.headers.items()},
            params=dict(parse_qsl(split.query, keep_blank_values=True)),
            route_params=params,
            body=body,
        )
        try:
            result = route.function.invoke(request, detail=f"{self.command} {path}")
        except Exception:
            log.exception("Function %s raised", route.function.spec.name)
            self._send(500)
            return
        response = _response_of(route.function, result)
        if response is None:
            self._send(204)
            return
        headers = dict(response.headers)
        if response.mimetype and not any(k.lower() == "content-type" for k in headers):
            headers["Content-Type"] = f"{response.mimetype}; charset={response.charset}"
        self._send(response.status_code, response.get_body() or b"", headers)

    def _send_error(self, status: int, code: str, message: str, headers: dict | None = None) -> None:
        """The host's own refusals, in the ARM error shape the app's functions use."""
        body = json.dumps({"error": {"code": code, "message": message}}).encode()
        self._send(status, body, {"Content-Type": "application/json; charset=utf-8", **(headers or {})})

    def __getattr__(self, name: str):
        # Every method reaches routing (BaseHTTPRequestHandler answers 501 in HTML for a method it has no
        # do_ handler for, such as QUERY); an unknown one is then a 405 like any method a route lacks.
        if name.startswith("do_"):
            return self._handle
        raise AttributeError(name)


def _response_of(function: LoadedFunction, result: dict):
    for binding in function.spec.bindings:
        if binding["type"] == "http":
            value = result.get(binding["name"])
            if isinstance(value, str):
                return func.HttpResponse(value)
            return value
    return None
