"""Loads a function's script as the Python worker does and invokes its entry point.

Each invocation gets an id and one log line when it ends, in the host's words:
`Executed 'Functions.Name' (Succeeded, Id=..., Duration=12ms)`.
"""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import logging
import sys
import threading
import time
import uuid
from typing import Any

import azure.functions as func

from devhost.appmodel import AppLoadError, FunctionSpec

log = logging.getLogger("devhost")


class InvocationContext(func.Context):
    def __init__(self, spec: FunctionSpec, invocation_id: str) -> None:
        self._spec = spec
        self._invocation_id = invocation_id
        self._local = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def function_name(self) -> str:
        return self._spec.name

    @property
    def function_directory(self) -> str:
        return self._spec.directory

    @property
    def trace_context(self):
        return None

    @property
    def retry_context(self):
        return None

    @property
    def thread_local_storage(self):
        return self._local


class OutputValue(func.Out):
    def __init__(self) -> None:
        self._value = None

    def set(self, val) -> None:
        self._value = val

    def get(self):
        return self._value


class LoadedFunction:
    """A function folder's entry point, imported once, with its bindings mapped to parameters."""

    def __init__(self, spec: FunctionSpec, app_root: str) -> None:
        self.spec = spec
        if app_root not in sys.path:
            sys.path.insert(0, app_root)
        module_spec = importlib.util.spec_from_file_location(
            spec.name, spec.script_file, submodule_search_locations=[spec.directory])
        if module_spec is None or module_spec.loader is None:
            raise AppLoadError(f"{spec.name}: {spec.script_file} cannot be loaded as a Python module")
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[spec.name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as error:
            sys.modules.pop(spec.name, None)
            raise AppLoadError(f"{spec.script_file}: import failed: {error!r}") from error
        entry = getattr(module, spec.entry_point, None)
        if not callable(entry):
            raise AppLoadError(f"{spec.script_file}: entryPoint {spec.entry_point!r} is not a function")
        self.entry = entry
        self.parameters = list(inspect.signature(entry).parameters)
        bound = {b["name"] for b in spec.bindings if b["name"] != "$return"}
        for name in self.parameters:
            if name not in bound and name != "context":
                raise AppLoadError(f"{spec.script_file}: parameter {name!r} has no binding in function.json")
        self.outputs = [b["name"] for b in spec.bindings
                        if b.get("direction") == "out" and b["name"] != "$return"]

    def invoke(self, trigger_value: Any, *, detail: str = "") -> dict[str, Any]:
        """Runs the function once; returns {"return": value, outputs...}; raises what the function raised."""
        invocation_id = str(uuid.uuid4())
        arguments: dict[str, Any] = {}
        outputs = {name: OutputValue() for name in self.outputs}
        trigger_name = self.spec.trigger["name"]
        for name in self.parameters:
            if name == trigger_name:
                arguments[name] = trigger_value
            elif name == "context":
                arguments[name] = InvocationContext(self.spec, invocation_id)
            elif name in outputs:
                arguments[name] = outputs[name]
        started = time.perf_counter()
        outcome = "Failed"
        try:
            result = self.entry(**arguments)
            if inspect.isawaitable(result):
                result = asyncio.run(_awaited(result))
            outcome = "Succeeded"
            values = {name: out.get() for name, out in outputs.items()}
            values["$return"] = result
            return values
        finally:
            took = (time.perf_counter() - started) * 1000
            suffix = f" {detail}" if detail else ""
            log.info("Executed 'Functions.%s' (%s, Id=%s, Duration=%.0fms)%s",
                     self.spec.name, outcome, invocation_id, took, suffix)


async def _awaited(awaitable):
    return await awaitable

