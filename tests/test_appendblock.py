"""The Append Block client Collect appends with (shared.platform.appendblock): against Azurite with each way the
app's storage authorizes it, and against stand-in servers for what Azurite never does (a token, a kept-alive
connection the server closed, a request sent and never answered)."""

from __future__ import annotations

import datetime as dt
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from azure.core.credentials import AccessToken, AzureNamedKeyCredential
from azure.core.exceptions import HttpResponseError, ServiceRequestError, ServiceResponseError
from azure.storage.blob import BlobServiceClient, ContainerSasPermissions, generate_container_sas

from shared.platform import appendblock
from shared.platform.appendblock import AppendBlockClient

API_VERSION = "2021-08-06"


@pytest.fixture
def container(azurite, names):
    client = BlobServiceClient.from_connection_string(azurite.connection_string).get_container_client(
        names.container("append"))
    client.create_container()
    return client


def _appended(client: AppendBlockClient, container, blob: str, pieces) -> bytes:
    container.get_blob_client(blob).create_append_blob()
    length = 0
    for piece in pieces:
        client.append_block(blob, piece, appendpos_condition=length)
        length += len(piece)
    return container.get_blob_client(blob).download_blob().readall()


def test_blocks_land_in_order_with_the_account_key_and_each_request_is_counted(container):
    sent = []
    client = AppendBlockClient.for_container(container, on_request=lambda: sent.append(1))
    # A piece over MAX_JOINED_BYTES has its head and body sent in two writes.
    pieces = [os.urandom(size) for size in (1, 1500, 70_000, appendblock.MAX_JOINED_BYTES + 1, 3)]
    assert _appended(client, container, "raw/app/event/2026/01/01/00/w-1.jsonl.gz", pieces) == b"".join(pieces)
    assert len(sent) == len(pieces)


def test_a_named_key_and_a_sas_authorize_appends_too(azurite, container):
    account = azurite.connection_string.split("AccountName=")[1].split(";")[0]
    key = azurite.connection_string.split("AccountKey=")[1].split(";")[0]
    named = AppendBlockClient(container.url, AzureNamedKeyCredential(account, key), api_version=API_VERSION)
    assert _appended(named, container, "named", [b"a", b"b"]) == b"ab"
    sas = generate_container_sas(account, container.container_name, account_key=key,
                                 permission=ContainerSasPermissions(add=True, write=True),
                                 expiry=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    by_sas = AppendBlockClient(f"{container.url}?{sas}", api_version=API_VERSION)
    assert _appended(by_sas, container, "with sas/and spaces", [b"c", b"d"]) == b"cd"


def test_a_wrong_key_is_refused_with_the_services_code(container):
    wrong = AzureNamedKeyCredential(container.account_name, "d3Jvbmcta2V5")
    client = AppendBlockClient(container.url, wrong, api_version=API_VERSION)
    container.get_blob_client("b").create_append_blob()
    with pytest.raises(HttpResponseError) as refused:
        client.append_block("b", b"x", appendpos_condition=0)
    assert refused.value.status_code == 403 and refused.value.error_code == "AuthorizationFailure"


def test_a_position_not_at_the_end_and_a_missing_blob_are_refused_with_their_codes(container):
    client = AppendBlockClient.for_container(container)
    container.get_blob_client("b").create_append_blob()
    client.append_block("b", b"12345", appendpos_condition=0)
    with pytest.raises(HttpResponseError) as refused:
        client.append_block("b", b"again", appendpos_condition=0)  # a repeated try: not stored twice
    assert (refused.value.status_code, refused.value.error_code) == (412, "AppendPositionConditionNotMet")
    assert "b was refused: 412" in str(refused.value)
    with pytest.raises(HttpResponseError) as missing:
        client.append_block("gone", b"x", appendpos_condition=0)
    assert (missing.value.status_code, missing.value.error_code) == (404, "BlobNotFound")
    assert container.get_blob_client("b").download_blob().readall() == b"12345"
    client.append_block("b", b"6", appendpos_condition=5)  # the connection is still usable after refusals
    assert container.get_blob_client("b").download_blob().readall() == b"123456"


class _StandIn(BaseHTTPRequestHandler):
    """Answers 201 to each append, then does what the test asks: keep the connection, close it, or hang up
    without answering. Records each request's path and Authorization header."""

    protocol_version = "HTTP/1.1"
    timeout = 10  # a connection the client keeps open cannot hold the server past its test
    behaviour = "keep"
    seen: list
    closed: threading.Semaphore

    def log_message(self, *args):
        pass

    def do_PUT(self):
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append((self.path, self.headers.get("Authorization")))
        if self.behaviour == "hang up":
            self.close_connection = True
            return
        self.send_response(201)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.wfile.flush()
        if self.behaviour == "close":  # closes without saying so: the client finds out when it reuses it
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            self.closed.release()


@pytest.fixture
def stand_in():
    class Handler(_StandIn):
        seen: list = []
        closed = threading.Semaphore(0)

    # Threaded, so stopping it does not wait on a connection a client still keeps (as a failed test's does).
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Handler, f"http://127.0.0.1:{server.server_address[1]}/account/container"
    finally:
        server.shutdown()
        server.server_close()


def test_a_token_credential_sends_a_bearer_token_and_renews_it_before_it_expires(stand_in):
    handler, url = stand_in
    issued = []

    class Credential:
        def get_token(self, *scopes, **kwargs):
            issued.append(scopes)
            lifetime = 100 if len(issued) == 1 else 3600  # the first is about to expire when used again
            return AccessToken(f"token-{len(issued)}", int(dt.datetime.now().timestamp()) + lifetime)

    client = AppendBlockClient(url, Credential(), api_version=API_VERSION)
    for _ in range(3):
        client.append_block("b", b"x", appendpos_condition=0)
    assert [auth for _, auth in handler.seen] == ["Bearer token-1", "Bearer token-2", "Bearer token-2"]
    assert issued == [("https://storage.azure.com/.default",)] * 2
    assert handler.seen[0][0] == "/account/container/b?comp=appendblock"


def test_a_kept_alive_connection_the_server_closed_is_not_reused(stand_in):
    handler, url = stand_in
    handler.behaviour = "close"
    client = AppendBlockClient(url, api_version=API_VERSION)
    for _ in range(3):
        client.append_block("b", b"x", appendpos_condition=0)
        assert handler.closed.acquire(timeout=10)  # closed before the next append: as after a keep-alive timeout
    assert len(handler.seen) == 3


def test_a_request_sent_and_never_answered_and_one_never_sent_are_told_apart(stand_in):
    handler, url = stand_in
    handler.behaviour = "hang up"
    with pytest.raises(ServiceResponseError, match="got no answer"):
        AppendBlockClient(url, api_version=API_VERSION).append_block("b", b"x", appendpos_condition=0)
    assert len(handler.seen) == 1
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    with pytest.raises(ServiceRequestError, match="could not be sent"):
        AppendBlockClient(f"http://127.0.0.1:{port}/a/c", api_version=API_VERSION).append_block(
            "b", b"x", appendpos_condition=0)


def test_a_credential_it_cannot_use_is_refused_when_the_client_is_made():
    with pytest.raises(TypeError, match="cannot authorize appends"):
        AppendBlockClient("https://account.blob.core.windows.net/c", object(), api_version=API_VERSION)
