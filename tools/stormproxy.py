"""A reverse proxy in front of one Azurite service that behaves like storage under load: it answers a share
of requests with 503 ServerBusy (as Azure Storage does when it throttles) and delays others, and answers
503 while the service behind it is down (restarting). Used by `make chaos`; counts what it did."""

from __future__ import annotations

import http.client
import random
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_BUSY = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.'
         b'</Message></Error>')
_DROPPED = ("connection", "keep-alive", "transfer-encoding", "content-length", "host")


class StormProxy:
    def __init__(self, target_port: int, *, busy_share: float, delay_share: float, delay_seconds: float,
                 seed: int = 0) -> None:
        self.target_port = target_port
        self.busy_share, self.delay_share, self.delay_seconds = busy_share, delay_share, delay_seconds
        self.counts: Counter = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._local = threading.local()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fate = proxy._fate()
                if fate == "busy":
                    self._answer(503, {"x-ms-error-code": "ServerBusy", "Content-Type": "application/xml"}, _BUSY)
                    return
                if fate == "delay":
                    time.sleep(proxy.delay_seconds)
                try:
                    status, headers, data = proxy._forward(self.command, self.path, dict(self.headers.items()), body)
                except (OSError, http.client.HTTPException):
                    proxy._count("down")
                    self._answer(503, {"x-ms-error-code": "ServerBusy", "Content-Type": "application/xml"}, _BUSY)
                    return
                self._answer(status, headers, data)

            def _answer(self, status, headers, data):
                self.send_response(status)
                for name, value in headers.items():
                    if name.lower() not in _DROPPED:
                        self.send_header(name, value)
                # A HEAD answer has no body, and its Content-Length is the resource's size (Get Blob Properties:
                # the blob's length), which the client reads: it is passed on as the service sent it.
                length = next((value for name, value in headers.items() if name.lower() == "content-length"), None)
                self.send_header("Content-Length", length if self.command == "HEAD" and length is not None
                                 else str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_MERGE = do_PATCH = do_OPTIONS = _handle

        class Server(ThreadingHTTPServer):
            request_queue_size = 128
            daemon_threads = True

            def handle_error(self, request, client_address):
                pass  # a client that went away (a host killed mid-request) is what the soak does on purpose

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="storm-proxy", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def _count(self, what: str) -> None:
        with self._lock:
            self.counts[what] += 1

    def _fate(self) -> str:
        with self._lock:
            draw = self._random.random()
            fate = "busy" if draw < self.busy_share else (
                "delay" if draw < self.busy_share + self.delay_share else "forward")
            self.counts[fate] += 1
        return fate

    def _forward(self, method: str, path: str, headers: dict, body: bytes):
        """Sends the request on this thread's connection to the service. Not retried here: a failure may come
        after the service acted, and the client hears a 503 as it would from storage that timed out."""
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = http.client.HTTPConnection("127.0.0.1", self.target_port,
                                                                              timeout=60)
        try:
            connection.request(method, path, body=body, headers={
                name: value for name, value in headers.items() if name.lower() != "connection"})
            answer = connection.getresponse()
            return answer.status, dict(answer.getheaders()), answer.read()
        except (OSError, http.client.HTTPException):
            connection.close()
            self._local.connection = None
            raise

    def start(self) -> StormProxy:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
