"""Shared by the test app's functions: what each invocation saw, for the tests to read."""
import threading

_lock = threading.Lock()
calls = []
# Holds the Sleepy function until a test lets it finish.
release = threading.Event()


def record(function_name, **seen):
    with _lock:
        calls.append(dict(seen, function=function_name))


def of(name):
    with _lock:
        return [call for call in calls if call["function"] == name]
