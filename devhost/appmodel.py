"""Reads a function app as the Functions host does: `host.json` and one `function.json` per folder.

`validate_function_json` checks a function.json against the binding shapes the real host accepts, so a
folder that works here also loads under `func start` and in Azure.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

HTTP_METHODS = ("get", "post", "put", "delete", "patch", "head", "options", "trace")
AUTH_LEVELS = ("anonymous", "function", "admin")
DATA_TYPES = ("string", "binary", "stream")

# type -> (allowed directions, required properties, optional properties)
BINDING_SHAPES: dict[str, tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]] = {
    "httpTrigger": (("in",), ("name",), ("authLevel", "methods", "route", "webHookType", "dataType")),
    "http": (("out",), ("name",), ()),
    "timerTrigger": (("in",), ("name", "schedule"), ("runOnStartup", "useMonitor")),
    "queueTrigger": (("in",), ("name", "queueName"), ("connection", "dataType")),
    "queue": (("out",), ("name", "queueName"), ("connection", "dataType")),
    "blobTrigger": (("in",), ("name", "path"), ("connection", "source", "dataType")),
    "blob": (("in", "out", "inout"), ("name", "path"), ("connection", "dataType")),
    "table": (("in", "out"), ("name", "tableName"),
              ("connection", "partitionKey", "rowKey", "take", "filter", "dataType")),
}
TRIGGER_TYPES = ("httpTrigger", "timerTrigger", "queueTrigger", "blobTrigger")
_NAME = re.compile(r"^(\$return|[A-Za-z_][A-Za-z0-9_]*)\Z")
_QUEUE_NAME = re.compile(r"^([a-z0-9](?:[a-z0-9]|-(?!-)){1,61}[a-z0-9]|%[A-Za-z0-9_]+%)\Z")


class AppLoadError(Exception):
    """The app folder does not form a valid function app; the message says which file and what."""


def validate_function_json(doc: Any) -> list[str]:
    """The problems of one function.json document, as sentences; empty when the real host would accept it."""
    if not isinstance(doc, dict):
        return ["function.json must be a JSON object"]
    problems: list[str] = []
    for key in ("scriptFile", "entryPoint"):
        if key in doc and (not isinstance(doc[key], str) or not doc[key]):
            problems.append(f"{key} must be a non-empty string")
    if "disabled" in doc and not isinstance(doc["disabled"], (bool, str)):
        problems.append("disabled must be a boolean")
    bindings = doc.get("bindings")
    if not isinstance(bindings, list) or not bindings:
        return problems + ["bindings must be a non-empty array"]
    names = set()
    triggers = 0
    for index, binding in enumerate(bindings):
        where = f"bindings[{index}]"
        if not isinstance(binding, dict):
            problems.append(f"{where} must be an object")
            continue
        kind = binding.get("type")
        if kind not in BINDING_SHAPES:
            problems.append(f"{where}.type {kind!r} is not a binding this app uses ({', '.join(BINDING_SHAPES)})")
            continue
        directions, required, optional = BINDING_SHAPES[kind]
        for key in required:
            if not isinstance(binding.get(key), str) or not binding[key]:
                problems.append(f"{where} ({kind}) needs {key} as a non-empty string")
        unknown = set(binding) - {"type", "direction"} - set(required) - set(optional)
        if unknown:
            problems.append(f"{where} ({kind}) has unknown properties: {', '.join(sorted(unknown))}")
        if binding.get("direction") not in directions:
            problems.append(f"{where} ({kind}) direction must be {' or '.join(directions)}")
        name = binding.get("name")
        if isinstance(name, str):
            if not _NAME.match(name):
                problems.append(f"{where}.name {name!r} is not a valid binding name")
            elif name == "$return" and binding.get("direction") == "in":
                problems.append(f"{where}: $return is only valid on an output binding")
            elif name in names:
                problems.append(f"{where}.name {name!r} is used twice")
            names.add(name)
        if kind in TRIGGER_TYPES:
            triggers += 1
        problems.extend(_check_properties(where, kind, binding))
    if triggers != 1:
        problems.append(f"a function needs exactly one trigger binding, found {triggers}")
    return problems


def _check_properties(where: str, kind: str, binding: dict) -> list[str]:
    problems = []
    if "dataType" in binding and binding["dataType"] not in DATA_TYPES:
        problems.append(f"{where}.dataType must be one of {', '.join(DATA_TYPES)}")
    if kind == "httpTrigger":
        if binding.get("authLevel", "function") not in AUTH_LEVELS:
            problems.append(f"{where}.authLevel must be one of {', '.join(AUTH_LEVELS)}")
        methods = binding.get("methods", list(HTTP_METHODS))
        if not isinstance(methods, list) or not all(isinstance(m, str) and m.lower() in HTTP_METHODS for m in methods):
            problems.append(f"{where}.methods must be a list of HTTP methods")
        if "route" in binding and not isinstance(binding["route"], str):
            problems.append(f"{where}.route must be a string")
    elif kind == "timerTrigger":
        for flag in ("runOnStartup", "useMonitor"):
            if flag in binding and not isinstance(binding[flag], bool):
                problems.append(f"{where}.{flag} must be a boolean")
    elif kind in ("queueTrigger", "queue"):
        name = binding.get("queueName")
        if isinstance(name, str) and not _QUEUE_NAME.match(name):
            problems.append(f"{where}.queueName {name!r} is not a valid queue name (3-63 of a-z, 0-9 and -)")
    elif kind in ("blobTrigger", "blob"):
        path = binding.get("path")
        if isinstance(path, str) and "/" not in path.strip("/"):
            problems.append(f"{where}.path must be container/blob-pattern")
        if kind == "blobTrigger" and binding.get("source", "LogsAndContainerScan") not in (
                "LogsAndContainerScan", "EventGrid"):
            problems.append(f"{where}.source must be LogsAndContainerScan or EventGrid")
    return problems


def parse_timespan(text: str) -> float:
    """Seconds in a host.json TimeSpan ("hh:mm:ss", "d.hh:mm:ss", fractions allowed)."""
    match = re.match(r"^(?:(\d+)\.)?(\d{1,2}):(\d{2}):(\d{2}(?:\.\d+)?)\Z", text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a TimeSpan (hh:mm:ss)")
    days, hours, minutes, seconds = match.groups()
    return int(days or 0) * 86400 + int(hours) * 3600 + int(minutes) * 60 + float(seconds)


@dataclass(frozen=True)
class QueueOptions:
    batch_size: int = 16
    new_batch_threshold: int = 8
    max_dequeue_count: int = 5
    visibility_timeout: float = 0.0
    max_polling_interval: float = 60.0
    message_encoding: str = "base64"


@dataclass(frozen=True)
class HostConfig:
    route_prefix: str = "api"
    queues: QueueOptions = field(default_factory=QueueOptions)
    function_timeout: float | None = None


@dataclass(frozen=True)
class FunctionSpec:
    name: str
    directory: str
    script_file: str
    entry_point: str
    bindings: tuple[dict[str, Any], ...]
    disabled: bool = False

    @property
    def trigger(self) -> dict[str, Any]:
        return next(b for b in self.bindings if b["type"] in TRIGGER_TYPES)


def load_host_config(root: str) -> HostConfig:
    path = os.path.join(root, "host.json")
    try:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
    except (OSError, ValueError) as error:
        raise AppLoadError(f"{path}: {error}") from None
    if doc.get("version") != "2.0":
        raise AppLoadError(f"{path}: version must be \"2.0\"")
    extensions = doc.get("extensions", {})
    queues = extensions.get("queues", {})
    try:
        options = QueueOptions(
            batch_size=int(queues.get("batchSize", 16)),
            new_batch_threshold=int(queues.get("newBatchThreshold", max(1, int(queues.get("batchSize", 16)) // 2))),
            max_dequeue_count=int(queues.get("maxDequeueCount", 5)),
            visibility_timeout=parse_timespan(queues.get("visibilityTimeout", "00:00:00")),
            max_polling_interval=parse_timespan(queues.get("maxPollingInterval", "00:01:00")),
            message_encoding=queues.get("messageEncoding", "base64"),
        )
        timeout = doc.get("functionTimeout")
        function_timeout = parse_timespan(timeout) if timeout and timeout != "-1" else None
    except (TypeError, ValueError) as error:
        raise AppLoadError(f"{path}: {error}") from None
    if options.message_encoding not in ("base64", "none"):
        raise AppLoadError(f"{path}: extensions.queues.messageEncoding must be base64 or none")
    prefix = extensions.get("http", {}).get("routePrefix", "api")
    return HostConfig(route_prefix=prefix.strip("/"), queues=options, function_timeout=function_timeout)


def load_functions(root: str) -> list[FunctionSpec]:
    """Every function folder under ``root`` (a folder holding function.json), checked as the host checks it."""
    specs = []
    for entry in sorted(os.listdir(root)):
        directory = os.path.join(root, entry)
        path = os.path.join(directory, "function.json")
        if entry.startswith(".") or not os.path.isfile(path):
            continue
        try:
            with open(path, encoding="utf-8") as handle:
                doc = json.load(handle)
        except ValueError as error:
            raise AppLoadError(f"{path}: not valid JSON: {error}") from None
        problems = validate_function_json(doc)
        if problems:
            raise AppLoadError(f"{path}: " + "; ".join(problems))
        script = os.path.join(directory, doc.get("scriptFile", "__init__.py"))
        if not os.path.isfile(script):
            raise AppLoadError(f"{path}: scriptFile {script} does not exist")
        disabled = doc.get("disabled", False)
        if isinstance(disabled, str):
            disabled = os.environ.get(disabled, disabled).lower() in ("1", "true")
        specs.append(FunctionSpec(name=entry, directory=directory, script_file=os.path.normpath(script),
                                  entry_point=doc.get("entryPoint", "main"),
                                  bindings=tuple(doc["bindings"]), disabled=bool(disabled)))
    return specs


def resolve_app_setting(text: str) -> str:
    """Replaces `%Name%` binding expressions with the app setting of that name, as the host does."""
    def setting(match: re.Match) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise AppLoadError(f"binding expression %{name}% names an app setting that is not set")
        return os.environ[name]

    return re.sub(r"%([A-Za-z0-9_.:]+)%", setting, text)
