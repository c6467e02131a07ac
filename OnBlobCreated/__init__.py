"""Blob trigger on the destination container's manifests: forwards each landed result file to the
downstream queue(s) routed for its data type. It fires on manifests only, which are small: the Python
worker reads the whole blob it is given."""

import azure.functions as func

from shared.export import forwarding


def main(manifest: func.InputStream) -> None:
    forwarding.forward(manifest.name or "", manifest.read())
