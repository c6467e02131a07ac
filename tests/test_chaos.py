"""The one-minute soak (`make chaos` runs the long one): two hosts on one Azurite behind throttling proxies,
hosts killed with SIGKILL, Azurite restarted once; every job ends with exactly the acknowledged records, and every
pipeline delivers each acknowledged record of its days once, late ones included. Erasures are asked all along:
each one succeeds, and no export or run created after its 202 holds a record it erases."""

from __future__ import annotations

import os
import re

from tools import chaos


def test_a_minute_of_chaos_loses_nothing_and_doubles_nothing(app_env, capsys):
    before = dict(os.environ)
    status = chaos.main(["--seconds", "60", "--apps", "2", "--seed", "7"])
    assert dict(os.environ) == before  # the soak's settings do not outlive it
    printed = capsys.readouterr().out
    summary = re.search(r"^chaos: kills=(\d+) jobs=(\d+) pipelines=(\d+) lost=(\d+) doubled=(\d+) erasures=(\d+) "
                        r"leaked=(\d+)$", printed, re.MULTILINE)
    assert summary, printed
    kills, jobs, pipelines, lost, doubled, erasures, leaked = map(int, summary.groups())
    assert (lost, doubled, leaked) == (0, 0, 0), printed
    assert kills >= 5 and jobs >= 32, printed  # every type and format of one app, and two of the other
    assert pipelines == 2, printed  # both checked whole: every acknowledged record of both days once
    tasks = re.search(r"^erasure tasks: (\d+), succeeded (\d+)$", printed, re.MULTILINE)
    assert tasks, printed
    listed, succeeded = map(int, tasks.groups())
    # Every erasure asked is listed (one whose 202 was lost too) and succeeded.
    assert erasures > 0 and listed >= erasures and succeeded == listed, printed
    assert status == 0, printed


def test_the_storm_proxy_passes_a_blob_s_length_on_in_a_head_answer(azurite, names):
    """Get Blob Properties reads the blob's length from the HEAD answer's Content-Length: a proxy that set it to
    the (empty) body's length made every blob look empty, and an erasure's rewrite then dropped what Collect had
    appended after the erasure's cut (the soak counted those records lost)."""
    from azure.storage.blob import BlobServiceClient

    from devhost.azurite import connection_string
    from tools.stormproxy import StormProxy

    proxy = StormProxy(azurite.ports["blob"], busy_share=0, delay_share=0, delay_seconds=0).start()
    try:
        through = connection_string("127.0.0.1", {**azurite.ports, "blob": proxy.port})
        container = BlobServiceClient.from_connection_string(through).get_container_client(names.container("proxy"))
        container.create_container()
        blob = container.get_blob_client("appended")
        blob.create_append_blob()
        blob.append_block(b"x" * 1234)
        assert blob.get_blob_properties().size == 1234
    finally:
        proxy.stop()
