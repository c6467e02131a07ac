"""Blob trigger on the destination container's manifests: forwards each landed result file to the
downstream queue(s) routed for its data type. It fires on manifests only, which are small: the Python
worker reads the whole blob it is given.

Its source is Event Grid (`"source": "EventGrid"`), the only blob source on Flex Consumption: storage's
BlobCreated events reach the host's blobs extension endpoint through the subscription `infra/eventgrid.bicep`
creates; the local host emulates that delivery. On a plan that scans containers, the source can be removed
from function.json and nothing else changes."""

import azure.functions as func

from shared.export import forwarding


def main(manifest: func.InputStream) -> None:
    forwarding.forward(manifest.name or "", manifest.read())
