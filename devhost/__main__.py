"""`python -m devhost serve`: Azurite (if not already running) plus the local host, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

from shared.platform import telemetry


class StopRequest:
    """Waits, signal-safely, for SIGTERM or SIGINT.

    The C-level signal handler writes the signal's number to a pipe that the main thread reads
    (``signal.set_wakeup_fd``), whichever thread the kernel delivered the signal to; the Python handler does
    nothing and takes no lock. (Setting an Event in the handler deadlocked when a second signal's handler ran
    inside the first, and a handler only runs once the main thread is woken, which a signal delivered to
    another thread does not do.)"""

    def __init__(self, signums=(signal.SIGTERM, signal.SIGINT)) -> None:
        self._read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        for signum in signums:
            signal.signal(signum, self._note)

    @staticmethod
    def _note(signum, frame) -> None:
        """Replaces the default action (exit, KeyboardInterrupt); the wakeup pipe has the signal already."""

    def wait(self) -> None:
        os.read(self._read, 1)


def serve(arguments) -> int:
    # Imported here, not above: processes the app starts with multiprocessing's spawn method import this
    # module again, and they should not pay for the host.
    from devhost.appmodel import AppLoadError
    from devhost.azurite import REPO_ROOT, AzuriteError, ensure_running
    from devhost.host import LocalHost, apply_local_settings
    from devhost.http_server import PortInUse
    from shared.platform.config import STORAGE_CONNECTION, expand_connection_string

    apply_local_settings(REPO_ROOT)
    connection = expand_connection_string(os.environ.get(STORAGE_CONNECTION, ""))
    if not connection:
        print(f"{STORAGE_CONNECTION} is not set (local.settings.json Values)", file=sys.stderr)
        return 2
    stopping = StopRequest()
    try:
        azurite = ensure_running(connection, os.path.join(REPO_ROOT, ".azurite"))
    except AzuriteError as error:
        print(f"Azurite: {error}", file=sys.stderr)
        return 1
    host = LocalHost(REPO_ROOT, host=arguments.host, port=arguments.port, functions=arguments.functions)
    still_running = []
    try:
        try:
            host.start()
        except AppLoadError as error:
            print(f"The app cannot be loaded: {error}", file=sys.stderr)
            return 2
        except PortInUse as error:
            print(f"The local host cannot start: {error}", file=sys.stderr)
            return 2
        started = "started Azurite" if azurite else "Azurite already running"
        print(f"Local host ready at {host.base_url} ({started}; Ctrl+C to stop)", flush=True)
        stopping.wait()
    finally:
        still_running = host.stop(grace_seconds=arguments.grace_seconds)
        if azurite is not None:
            azurite.stop()
    print("Local host stopped", flush=True)
    if still_running:
        # The interpreter's exit would wait for these invocations' threads; their work is retried elsewhere.
        sys.stderr.flush()
        os._exit(0)
    return 0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number of seconds, 0 or more, not {text!r}")
    return value


class FieldsFormatter(logging.Formatter):
    """Prints a line's job fields (shared.platform.telemetry.LOG_FIELDS) after it, as Application Insights
    shows them beside it."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{name}={getattr(record, name)}" for name in telemetry.LOG_FIELDS if hasattr(record, name))
        return f"{line} [{fields}]" if fields else line


def main(argv=None) -> int:
    from devhost.host import DEFAULT_GRACE_SECONDS

    parser = argparse.ArgumentParser(prog="python -m devhost", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run Azurite and the function app")
    serve_parser.add_argument("--host", default="127.0.0.1")
    serve_parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7071")))
    serve_parser.add_argument("--functions", nargs="+", metavar="NAME",
                              help="run only these functions (default: all of the app's)")
    serve_parser.add_argument("--grace-seconds", type=_seconds, default=DEFAULT_GRACE_SECONDS,
                              help="on stop, how long running invocations may finish (default: %(default)s); "
                                   "what is still running then is retried by the next host")
    arguments = parser.parse_args(argv)
    handler = logging.StreamHandler()
    handler.setFormatter(FieldsFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("azure").setLevel(logging.WARNING)
    return serve(arguments)


if __name__ == "__main__":
    sys.exit(main())
