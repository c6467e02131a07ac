"""A reverse proxy on a free loopback port in front of one of Azurite's services, whose behaviour a test
switches: forward every request, answer every request with a redirect to the real service, take requests
and never answer (a destination that stopped answering), answer some with 503 ServerBusy (throttling), forward
one and drop its answer (storage that stored it, then lost the connection), or flip a byte in the body of the
next upload it forwards (a block damaged on the way). Every request it saw is listed with its answer."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

FORWARD, REDIRECT, HANG, BUSY, CORRUPT, LOSE = "forward", "redirect", "hang", "busy", "corrupt", "lose"
BUSY_BODY = (b'<?xml version="1.0" encoding="utf-8"?><Error><Code>ServerBusy</Code><Message>The server is busy.'
             b'</Message></Error>')


class FaultProxy:
    def __init__(self, target_url: str) -> None:
        target = urlsplit(target_url)
        self.target_host, self.target_port = target.hostname, target.port
        self.mode = FORWARD
        # In BUSY mode, the requests whose path holds this text are answered 503 ServerBusy; in LOSE mode, the
        # first of them is forwarded and its answer dropped. Others pass.
        self.fault_when = ""
        self.seen: list[tuple[str, str, object]] = []  # (method, path, status or mode)
        self._released = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _handle(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                mode = proxy.mode
                if mode == HANG:
                    proxy.seen.append((self.command, self.path, HANG))
                    proxy._released.wait(120)
                    self.close_connection = True
                    return
                if mode == BUSY and proxy.fault_when in self.path:
                    proxy.seen.append((self.command, self.path, 503))
                    self.send_response(503)
                    self.send_header("x-ms-error-code", "ServerBusy")
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(BUSY_BODY)))
                    self.end_headers()
                    self.wfile.write(BUSY_BODY)
                    return
                if mode == REDIRECT:
                    proxy.seen.append((self.command, self.path, 307))
                    self.send_response(307)
                    self.send_header("Location", f"http://{proxy.target_host}:{proxy.target_port}{self.path}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if mode == CORRUPT and body:
                    proxy.mode = FORWARD  # one damaged upload; its retry goes through whole
                    body = bytes([body[0] ^ 0xFF]) + body[1:]
                connection = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=30)
                headers = {name: value for name, value in self.headers.items() if name.lower() != "host"}
                headers["Host"] = f"{proxy.target_host}:{proxy.target_port}"
                connection.request(self.command, self.path, body=body, headers=headers)
                answer = connection.getresponse()
                data = answer.read()
                connection.close()
                if mode == LOSE and proxy.fault_when in self.path:
                    proxy.mode = FORWARD
                    proxy.seen.append((self.command, self.path, LOSE))
                    self.close_connection = True
                    return
                proxy.seen.append((self.command, self.path, answer.status))
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(name, value)
                # A HEAD's answer has no body but the length of the body a GET would have (a blob's size).
                length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FaultProxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._released.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
