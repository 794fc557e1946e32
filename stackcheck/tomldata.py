"""Reading stackcheck's TOML files (stack files, policies, the image catalog) one way: typed
access to a table whose every error names the file, the dotted key and the fix."""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stackcheck.errors import StackcheckError

NAME = re.compile(r"^[a-z][a-z0-9-]{0,40}$")


def read(path: Path, error: type[StackcheckError], what: str, fix_missing: str) -> dict[str, Any]:
    """Parse the TOML file ``path`` (a ``what``, e.g. "stack file"); any failure is one ``error``."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror}", fix_missing) from exc
    except UnicodeDecodeError as exc:
        raise error(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", "save it as UTF-8 TOML") from exc
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}", "fix the syntax at the position named") from exc


class Reader:
    """Typed access to one table, with errors that name the file and the dotted key."""

    def __init__(self, path: Path, data: Mapping[str, Any], where: str, error: type[StackcheckError]) -> None:
        self.path, self.data, self.where, self.error = path, data, where, error

    def fail(self, key: str, problem: str, fix: str) -> StackcheckError:
        dotted = f"{self.where}.{key}" if self.where and key else (self.where or key)
        return self.error(f"{self.path}: [{dotted}] {problem}", fix)

    def only(self, allowed: set[str]) -> None:
        unknown = sorted(set(self.data) - allowed)
        if unknown:
            raise self.fail(unknown[0], "is not a known key", f"use one of: {', '.join(sorted(allowed))}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.data:
            if required:
                raise self.fail(key, "is missing", f"add `{key} = ...` to [{self.where}]")
            return default
        value = self.data[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # bool is an int in Python; a file that says `replicas = true` is wrong.
        value_ok = False if isinstance(value, bool) and bool not in kinds else isinstance(value, kinds)
        if not value_ok:
            names = " or ".join(k.__name__ for k in kinds)
            raise self.fail(
                key, f"must be {names}, not {type(value).__name__} ({value!r})", f"write {key} as a {names}"
            )
        return value

    def table(self, key: str) -> Reader:
        where = f"{self.where}.{key}" if self.where else key
        return Reader(self.path, self.get(key, dict, {}), where, self.error)

    def str_list(self, key: str) -> tuple[str, ...]:
        items = self.get(key, list, [])
        for item in items:
            if not isinstance(item, str):
                raise self.fail(key, f"must be a list of strings, found {item!r}", f'write {key} = ["..."]')
        return tuple(items)

    def str_map(self, key: str) -> dict[str, str]:
        table = self.table(key)
        for name in table.data:
            table.get(name, str)
        return dict(table.data)

    def name(self, value: str, what: str) -> str:
        if not NAME.match(value):
            raise self.fail(
                value, f"is not a valid {what} name", "use lower-case letters, digits and '-', start with a letter"
            )
        return value
