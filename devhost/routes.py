"""HTTP route templates as the Functions host (ASP.NET routing) reads them.

Supported: literal segments (matched case-insensitively), `{param}`, `{param?}` (optional, trailing),
`{param:int}`-style constraints (int, long, bool, guid, alpha), and a trailing catch-all `{*param}` that
also matches nothing.
"""

from __future__ import annotations

import re

_CONSTRAINTS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?i:true|false)",
    "guid": r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}",
    "alpha": r"[A-Za-z]+",
}
_PARAM = re.compile(r"\{(\*?)([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z]+))?(\?)?\}")


class RouteTemplate:
    """One compiled route; ``match`` gives the route parameters or None."""

    def __init__(self, template: str) -> None:
        self.template = template.strip("/")
        self.literal_segments = 0
        self.has_catch_all = False
        self.parameters: list[str] = []
        pattern = "^"
        segments = self.template.split("/") if self.template else []
        for index, segment in enumerate(segments):
            last = index == len(segments) - 1
            whole = _PARAM.fullmatch(segment)
            if whole and whole.group(1):  # {*rest}
                if not last:
                    raise ValueError(f"route {template!r}: a catch-all parameter must be the last segment")
                self.has_catch_all = True
                self.parameters.append(whole.group(2))
                pattern += f"(?:{'/' if index else ''}(?P<{whole.group(2)}>.*))?"
                continue
            if whole and whole.group(4):  # {param?}
                if not last:
                    raise ValueError(f"route {template!r}: only the last parameter can be optional")
                self.parameters.append(whole.group(2))
                pattern += f"(?:{'/' if index else ''}(?P<{whole.group(2)}>{self._body(whole.group(3))}))?"
                continue
            pattern += "/" if index else ""
            position = 0
            literal = True
            for param in _PARAM.finditer(segment):
                literal = False
                pattern += re.escape(segment[position:param.start()])
                self.parameters.append(param.group(2))
                pattern += f"(?P<{param.group(2)}>{self._body(param.group(3))})"
                position = param.end()
            pattern += re.escape(segment[position:])
            if literal:
                self.literal_segments += 1
        self._regex = re.compile(pattern + "/?$", re.IGNORECASE)

    @staticmethod
    def _body(constraint: str | None) -> str:
        if constraint is None:
            return "[^/]+"
        if constraint.lower() not in _CONSTRAINTS:
            raise ValueError(f"route constraint {constraint!r} is not supported")
        return _CONSTRAINTS[constraint.lower()]

    def match(self, path: str) -> dict[str, str] | None:
        found = self._regex.match(path.strip("/"))
        if not found:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}

    @property
    def sort_key(self):
        """Most specific first: more literal segments, then fewer parameters, catch-alls last."""
        return (self.has_catch_all, -self.literal_segments, len(self.parameters), self.template)
