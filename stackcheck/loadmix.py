"""The stack file's ``[load]`` section: what a load run sends, as data.

    [load.values]                       # lists for ${pick.NAME}
    words = ["alpha", "bravo"]

    [load.seed.things]                  # sent `count` times before the run, in file order
    method = "POST"
    path = "/api/things"
    json = { title = "seed ${pick.words} ${seq}", marker = "${run}" }
    count = 20
    capture = "id"                      # each answer's "id", for ${pick.things}

    [load.requests.get-thing]           # the weighted mix; NAME is the endpoint in the report
    method = "GET"
    path = "/api/things/${pick.things}"
    group = "read"                      # judged by [objectives.load.read]
    weight = 25
    expect = [200]                      # accepted statuses (default: any 2xx)
    stream = "sse"                      # the answer streams: time to first token measured too

    [load.cleanup.things]               # after the run: list this run's data, delete each
    method = "GET"
    path = "/api/things?marker=${run}"
    capture = "items.*.id"
    each = { method = "DELETE", path = "/api/things/${item}", expect = [204] }

Requests: ``method``, ``path`` (relative to the entrypoint), optional ``json`` (any TOML value,
templated recursively) or ``body`` (a string), ``headers``, ``expect``. A mix request also has
``group`` (default: its own name), ``weight`` (default 1) and optional ``capture``: the values
its answers carry, kept per Locust user for ``${pick.NAME}`` / ``${take.NAME}`` of later
requests of that user. A request that needs a list the user has not filled yet sends the
request that fills it instead (an update before any create creates). ``capture`` is a dotted
path into the JSON answer: ``id``, ``data.id``, ``items.*.id`` (``*``: every element of a list).

``stream`` (mix requests only): the answer is read as it arrives. ``"sse"``: Server-Sent
Events; its first token is the first event with data and no ``event:`` name (the OpenAI
convention: every token chunk is one; named events such as a "stored" receipt are framing), a
stream that sends an ``event: error`` or never a token fails with ``stream-error``.
``"bytes"``: any body; its first token is its first byte. The sample's latency is the full
answer; the time to first token is judged by an objective's ``ttft_p95_ms``.

Fields, each evaluated once per request (every occurrence in one request gets the same value;
in a path the value is percent-encoded; a JSON string that is exactly one field keeps the
value's type, so a captured number stays a number; ``$${...}`` is a literal ``${...}``):

    ${seq}           the request's number, unique within the run (a seed's: 0 .. count-1)
    ${random}        8 random hex digits          ${random.LO-HI}  a random integer LO..HI
    ${run}           the run's marker: put it on what the run creates, so cleanup finds it
    ${time}          Unix time, milliseconds
    ${pick.NAME}     a random value of a [load.values] list, a seed's captures, or this
                     user's captures of request NAME
    ${take.NAME}     the oldest of this user's captures of request NAME, removed (a delete)
    ${item}          in a cleanup's ``each``: the captured value it runs for

Objectives: a request is judged by ``[objectives.load.GROUP]`` or ``[objectives.load.NAME]``;
a group with neither is allowed when the stack has ``[objectives.load.default]``, which then
judges each of its requests on its own (a read group next to a write objective, say). With
no objective at all for it the stack file is rejected: its requests would count only in the
total, which is how a typo in a group name would otherwise pass unnoticed.

Or ``[load] locustfile = "perf/locustfile.py"`` (relative to the stack file): the stack's own
Locust User classes, run by stackcheck's driver; the contract is at the top of the driver,
load/locustfile.py.

The driver (Locust processes) rebuilds the mix with ``LoadMix.from_plan`` and fills requests
with ``HttpTemplate.render``; this module imports nothing heavier than the standard library.
"""

from __future__ import annotations

import functools
import random
import re
import time
from collections.abc import Collection, Iterator, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

from stackcheck.tomldata import Reader

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
FIELD = re.compile(r"(\$?)\$\{([^}]*)\}")  # a leading extra $ escapes it
RANGE = re.compile(r"^(\d+)-(\d+)$")
DEFAULT_OBJECTIVE = "default"
TEMPLATE_KEYS = {"method", "path", "json", "body", "headers", "expect"}
FIELDS_FIX = "use ${seq}, ${random}, ${random.LO-HI}, ${run}, ${time}, ${pick.NAME}, ${take.NAME} or ${item}"

Scalar = str | int | float


class Kind(Enum):
    SEQ = "seq"
    RANDOM = "random"
    RUN = "run"
    TIME = "time"
    PICK = "pick"
    TAKE = "take"
    ITEM = "item"


class StreamKind(Enum):
    """How a streamed answer is read (see ``stream`` above)."""

    SSE = "sse"
    BYTES = "bytes"


class SseEvent(Enum):
    TOKEN = "token"  # data in an unnamed event (or one named "message"): a piece of the answer
    ERROR = "error"  # ``event: error``: the stream tells of its failure
    FRAMING = "framing"  # any other named event, a comment, [DONE]


def sse_event(event: bytes) -> SseEvent:
    """What one Server-Sent Event (its lines, without the blank line that ends it) is."""
    fields: dict[bytes, bytes] = {}
    for line in event.replace(b"\r", b"").split(b"\n"):
        key, _, value = line.partition(b":")
        if key:
            fields[key] = value.strip()
    name = fields.get(b"event", b"message")
    if name == b"error":
        return SseEvent.ERROR
    data = fields.get(b"data")
    return SseEvent.TOKEN if name == b"message" and data and data != b"[DONE]" else SseEvent.FRAMING


class FieldError(ValueError):
    """A ``${...}`` that is not a field (the parser turns it into a StackFileError)."""


@dataclass(frozen=True)
class Field:
    kind: Kind
    arg: str = ""  # the list of pick/take, "LO-HI" of random

    def bounds(self) -> tuple[int, int]:
        match = RANGE.match(self.arg)
        if match is None:
            raise FieldError(f"${{random.{self.arg}}} is not a range LO-HI")
        lo, hi = int(match.group(1)), int(match.group(2))
        if lo > hi:
            raise FieldError(f"${{random.{self.arg}}} ends before it starts")
        return lo, hi


@functools.lru_cache(maxsize=256)
def parse_field(text: str) -> Field:
    """The field inside ``${text}``."""
    kind_text, dot, arg = text.partition(".")
    try:
        kind = Kind(kind_text)
    except ValueError:
        raise FieldError(f"${{{text}}} is not a field") from None
    if kind in (Kind.PICK, Kind.TAKE) and not arg:
        raise FieldError(f"${{{text}}} names no list")
    if kind not in (Kind.PICK, Kind.TAKE, Kind.RANDOM) and dot:
        raise FieldError(f"${{{text}}} takes no argument")
    result = Field(kind, arg)
    if kind is Kind.RANDOM and dot:
        result.bounds()
    return result


@dataclass
class Values:
    """Where one request's fields come from."""

    run: str
    seq: int = 0
    lists: MutableMapping[str, list[Scalar]] = field(default_factory=dict)
    item: Scalar | None = None
    rng: random.Random = field(default_factory=random.Random)

    def value(self, f: Field) -> Scalar:
        if f.kind is Kind.SEQ:
            return self.seq
        if f.kind is Kind.RANDOM:
            return self.rng.randint(*f.bounds()) if f.arg else f"{self.rng.getrandbits(32):08x}"
        if f.kind is Kind.RUN:
            return self.run
        if f.kind is Kind.TIME:
            return round(time.time(), 3)
        if f.kind is Kind.PICK:
            return self.rng.choice(self.lists[f.arg])
        if f.kind is Kind.TAKE:
            return self.lists[f.arg].pop(0)
        if self.item is None:
            raise FieldError("${item} outside a cleanup's each")
        return self.item


@dataclass(frozen=True)
class Rendered:
    """A request with every field filled in, ready to send."""

    method: str
    path: str
    json: Any = None
    body: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class HttpTemplate:
    method: str
    path: str
    json: Any = None  # a JSON body: any TOML value, strings templated
    body: str | None = None  # any other body
    headers: Mapping[str, str] = field(default_factory=dict)
    expect: tuple[int, ...] = ()  # accepted statuses; empty: any 2xx

    def texts(self) -> Iterator[tuple[str, str]]:
        """(stack-file key, text) of every templated string."""
        yield "path", self.path
        for value in self.headers.values():
            yield "headers", value
        if self.body is not None:
            yield "body", self.body
        for text in _strings(self.json):
            yield "json", text

    @functools.cached_property
    def fields(self) -> tuple[Field, ...]:
        found = [parse_field(m.group(2)) for _, text in self.texts() for m in FIELD.finditer(text) if not m.group(1)]
        return tuple(dict.fromkeys(found))

    def accepts(self, status: int) -> bool:
        return status in self.expect if self.expect else 200 <= status < 300

    def missing(self, lists: Mapping[str, Sequence[Scalar]]) -> str | None:
        """The first list this request reads that is empty in ``lists``, if any."""
        return next((f.arg for f in self.fields if f.kind in (Kind.PICK, Kind.TAKE) and not lists.get(f.arg)), None)

    def render(self, values: Values) -> Rendered:
        chosen = {f: values.value(f) for f in self.fields}
        return Rendered(
            method=self.method,
            path=_fill(self.path, chosen, encode=True),
            json=_fill_json(self.json, chosen),
            body=None if self.body is None else _fill(self.body, chosen),
            headers={name: _fill(value, chosen) for name, value in self.headers.items()},
        )

    def to_plan(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "path": self.path,
            "json": self.json,
            "body": self.body,
            "headers": dict(self.headers),
            "expect": list(self.expect),
        }

    @classmethod
    def from_plan(cls, data: Mapping[str, Any]) -> HttpTemplate:
        return cls(
            data["method"], data["path"], data["json"], data["body"], dict(data["headers"]), tuple(data["expect"])
        )


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)
    elif isinstance(node, dict):
        for item in node.values():
            yield from _strings(item)


def _fill(text: str, chosen: Mapping[Field, Scalar], encode: bool = False) -> str:
    def replace(match: re.Match[str]) -> str:
        if match.group(1):
            return match.group(0)[1:]
        value = str(chosen[parse_field(match.group(2))])
        return quote(value, safe="") if encode else value

    return FIELD.sub(replace, text)


def _fill_json(node: Any, chosen: Mapping[Field, Scalar]) -> Any:
    if isinstance(node, str):
        whole = FIELD.fullmatch(node)
        return chosen[parse_field(whole.group(2))] if whole and not whole.group(1) else _fill(node, chosen)
    if isinstance(node, list):
        return [_fill_json(item, chosen) for item in node]
    if isinstance(node, dict):
        return {key: _fill_json(item, chosen) for key, item in node.items()}
    return node


def capture(path: str, document: Any) -> list[Scalar]:
    """The values at dotted ``path`` in a JSON document (``*``: every element of a list)."""
    found = [document]
    for part in path.split("."):
        step: list[Any] = []
        for node in found:
            if part == "*" and isinstance(node, list):
                step.extend(node)
            elif isinstance(node, dict) and part in node:
                step.append(node[part])
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                step.append(node[int(part)])
        found = step
    return [v for v in found if _is_scalar(v)]


def _is_scalar(value: Any) -> bool:
    return isinstance(value, str | int | float) and not isinstance(value, bool)


@dataclass(frozen=True)
class MixRequest:
    name: str  # the endpoint in samples and reports
    http: HttpTemplate
    group: str
    weight: float = 1.0
    capture: str | None = None
    stream: StreamKind | None = None  # None: the answer is read whole


@dataclass(frozen=True)
class SeedRequest:
    name: str
    http: HttpTemplate
    count: int = 1
    capture: str | None = None


@dataclass(frozen=True)
class CleanupRequest:
    name: str
    http: HttpTemplate
    capture: str | None = None
    each: HttpTemplate | None = None  # sent once per captured value (${item})


@dataclass(frozen=True)
class LoadMix:
    requests: tuple[MixRequest, ...] = ()
    seeds: tuple[SeedRequest, ...] = ()
    cleanup: tuple[CleanupRequest, ...] = ()
    values: Mapping[str, tuple[Scalar, ...]] = field(default_factory=dict)
    locustfile: Path | None = None  # the stack's own Locust users instead of requests

    def request(self, name: str) -> MixRequest:
        return next(r for r in self.requests if r.name == name)

    def choose(self, rng: random.Random) -> MixRequest:
        """A request drawn by weight."""
        return rng.choices(self.requests, weights=[r.weight for r in self.requests])[0]

    def user_lists(self) -> dict[str, list[Scalar]]:
        """A fresh, empty list per capturing request (each Locust user keeps its own)."""
        return {r.name: [] for r in self.requests if r.capture is not None}

    def to_plan(self) -> dict[str, Any]:
        return {
            "locustfile": str(self.locustfile) if self.locustfile else None,
            "values": {name: list(items) for name, items in self.values.items()},
            "requests": [
                {
                    "name": r.name,
                    "http": r.http.to_plan(),
                    "group": r.group,
                    "weight": r.weight,
                    "capture": r.capture,
                    "stream": r.stream.value if r.stream else None,
                }
                for r in self.requests
            ],
            "seeds": [
                {"name": s.name, "http": s.http.to_plan(), "count": s.count, "capture": s.capture} for s in self.seeds
            ],
            "cleanup": [
                {
                    "name": c.name,
                    "http": c.http.to_plan(),
                    "capture": c.capture,
                    "each": c.each.to_plan() if c.each else None,
                }
                for c in self.cleanup
            ],
        }

    @classmethod
    def from_plan(cls, data: Mapping[str, Any]) -> LoadMix:
        return cls(
            requests=tuple(
                MixRequest(
                    r["name"],
                    HttpTemplate.from_plan(r["http"]),
                    r["group"],
                    r["weight"],
                    r["capture"],
                    StreamKind(r["stream"]) if r.get("stream") else None,
                )
                for r in data["requests"]
            ),
            seeds=tuple(
                SeedRequest(s["name"], HttpTemplate.from_plan(s["http"]), s["count"], s["capture"])
                for s in data["seeds"]
            ),
            cleanup=tuple(
                CleanupRequest(
                    c["name"],
                    HttpTemplate.from_plan(c["http"]),
                    c["capture"],
                    HttpTemplate.from_plan(c["each"]) if c["each"] else None,
                )
                for c in data["cleanup"]
            ),
            values={name: tuple(items) for name, items in data["values"].items()},
            locustfile=Path(data["locustfile"]) if data["locustfile"] else None,
        )


# -- parsing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scope:
    """What the fields of one template may refer to."""

    values: Collection[str]
    seeds: Mapping[str, bool]  # seed name -> it captures
    requests: Collection[str] = ()  # requests that capture (lists kept per user)
    captures: bool = False  # this template fills a list itself: it reads no request's list
    item: bool = False  # a cleanup's each

    def problem(self, f: Field) -> str | None:
        name = f.arg
        if f.kind is Kind.ITEM and not self.item:
            return "${item} is only for a cleanup's each"
        if f.kind is Kind.TAKE and name not in self.requests:
            return f"${{take.{name}}} takes from a list only a capturing [load.requests.{name}] fills"
        if f.kind not in (Kind.PICK, Kind.TAKE):
            return None
        if name in self.requests and self.captures:
            return f"a request that captures cannot read request {name!r}'s list (its fallback would chain)"
        if name in self.values or self.seeds.get(name) or name in self.requests:
            return None
        if name in self.seeds:
            return f"${{pick.{name}}}: seed {name!r} captures nothing"
        return f"${{{f.kind.value}.{name}}} names no seed with capture, [load.values] list or capturing request"


def parse(table: Reader, objectives: Collection[str], stack_path: Path) -> LoadMix | None:
    """The stack file's ``[load]`` table; None when the stack declares none.

    ``objectives`` are the names of the stack's ``[objectives.load.NAME]`` tables."""
    if not table.data:
        return None
    table.only({"locustfile", "requests", "seed", "cleanup", "values"})
    if "locustfile" in table.data:
        return _locustfile(table, stack_path)
    values = _values(table.table("values"))
    seeds: list[SeedRequest] = []
    st = table.table("seed")
    for name in st.data:
        entry = st.table(st.name(name, "seed"))
        entry.only(TEMPLATE_KEYS | {"count", "capture"})
        _unique(st, name, values, seeds)
        capture_path = _capture(entry)
        http = _http(entry, _Scope(values, {s.name: s.capture is not None for s in seeds}))
        count = entry.get("count", int, 1)
        if count < 1:
            raise entry.fail("count", f"must be at least 1, not {count}", "write count = 20")
        seeds.append(SeedRequest(name, http, count, capture_path))
    seed_lists = {s.name: s.capture is not None for s in seeds}

    rt = table.table("requests")
    if not rt.data:
        raise table.fail(
            "requests", "declares no request", "add [load.requests.NAME] with method and path, or set locustfile"
        )
    capturing = [n for n, d in rt.data.items() if isinstance(d, dict) and "capture" in d]
    requests: list[MixRequest] = []
    for name in rt.data:
        entry = rt.table(rt.name(name, "request"))
        entry.only(TEMPLATE_KEYS | {"group", "weight", "capture", "stream"})
        capture_path = _capture(entry)
        if capture_path is not None:
            _unique(rt, name, values, seeds)
        http = _http(entry, _Scope(values, seed_lists, capturing, captures=capture_path is not None))
        group = entry.get("group", str, name)
        if DEFAULT_OBJECTIVE not in objectives and group not in objectives and name not in objectives:
            raise entry.fail(
                "group",
                f"{group!r} has no [objectives.load.{group}] and the stack has no [objectives.load.default]",
                f"add [objectives.load.{group}] (e.g. p95_ms = 500) or [objectives.load.default], "
                "which judges each request of a group without objective on its own",
            )
        weight = entry.get("weight", (int, float), 1)
        if weight <= 0:
            raise entry.fail("weight", f"must be more than 0, not {weight}", "write weight = 10 (a relative share)")
        requests.append(MixRequest(name, http, group, float(weight), capture_path, _stream(entry)))

    cleanup: list[CleanupRequest] = []
    ct = table.table("cleanup")
    for name in ct.data:
        entry = ct.table(ct.name(name, "cleanup"))
        entry.only(TEMPLATE_KEYS | {"capture", "each"})
        capture_path = _capture(entry)
        http = _http(entry, _Scope(values, seed_lists))
        each = None
        if "each" in entry.data:
            if capture_path is None:
                raise entry.fail("each", "needs capture: the values it runs for", 'add capture = "items.*.id"')
            sub = entry.table("each")
            sub.only(TEMPLATE_KEYS)
            each = _http(sub, _Scope(values, seed_lists, item=True))
            if Field(Kind.ITEM) not in each.fields:
                raise sub.fail("path", "never uses ${item}: every value would get the same request", _EACH_FIX)
        elif capture_path is not None:
            raise entry.fail("capture", "captures for nothing: there is no each", _EACH_FIX)
        cleanup.append(CleanupRequest(name, http, capture_path, each))
    return LoadMix(tuple(requests), tuple(seeds), tuple(cleanup), values)


def _stream(entry: Reader) -> StreamKind | None:
    raw: str | None = entry.get("stream", str)
    if raw is None:
        return None
    try:
        return StreamKind(raw)
    except ValueError:
        kinds = " or ".join(f'"{k.value}"' for k in StreamKind)
        fix = 'write stream = "sse" (Server-Sent Events)'
        raise entry.fail("stream", f"must be {kinds}, not {raw!r}", fix) from None


_EACH_FIX = 'add each = { method = "DELETE", path = "/api/things/${item}" }'


def _locustfile(table: Reader, stack_path: Path) -> LoadMix:
    others = sorted(set(table.data) - {"locustfile"})
    if others:
        raise table.fail(others[0], "cannot be used with locustfile", "keep either locustfile or the [load.*] tables")
    path = (stack_path.parent / table.get("locustfile", str)).resolve()
    if not path.is_file():
        raise table.fail("locustfile", f"{path} does not exist", "fix the path (relative to the stack file)")
    return LoadMix(locustfile=path)


def _values(table: Reader) -> dict[str, tuple[Scalar, ...]]:
    out: dict[str, tuple[Scalar, ...]] = {}
    for name in table.data:
        items = table.get(table.name(name, "value list"), list)
        if not items or not all(_is_scalar(item) for item in items):
            raise table.fail(name, "must be a non-empty list of strings or numbers", f'write {name} = ["a", "b"]')
        out[name] = tuple(items)
    return out


def _unique(table: Reader, name: str, values: Mapping[str, Any], seeds: Sequence[SeedRequest]) -> None:
    """Lists share one namespace for ${pick.NAME}: a seed or capturing request may not reuse a name."""
    if name in values or any(s.name == name for s in seeds):
        raise table.fail(
            name, "is also the name of a seed or [load.values] list", "rename one: ${pick.NAME} must be unambiguous"
        )


def _capture(entry: Reader) -> str | None:
    path: str | None = entry.get("capture", str)
    if path is not None and not all(path.split(".")):
        raise entry.fail("capture", f"{path!r} is not a dotted path", 'write capture = "id" or "items.*.id"')
    return path


def method_and_path(entry: Reader, default_method: str | None = None) -> tuple[str, str]:
    """The checked method and path of an HTTP request table (a load-mix request, a chaos workload),
    whose ``json`` and ``body`` exclude each other."""
    method = str(entry.get("method", str, default_method, required=default_method is None)).upper()
    if method not in METHODS:
        raise entry.fail("method", f"{method!r} is not an HTTP method", f"use one of: {', '.join(METHODS)}")
    path: str = entry.get("path", str, required=True)
    if not path.startswith("/"):
        raise entry.fail("path", f"{path!r} does not start with /", 'write path = "/api/things" (the entrypoint\'s)')
    if "json" in entry.data and "body" in entry.data:
        raise entry.fail("body", "and json are both set", 'keep one: json = { ... } or body = "..."')
    return method, path


def _http(entry: Reader, scope: _Scope) -> HttpTemplate:
    method, path = method_and_path(entry)
    body = _json_value(entry, entry.data.get("json"))
    expect = entry.get("expect", list, [])
    if not all(isinstance(s, int) and not isinstance(s, bool) and 100 <= s <= 599 for s in expect):
        raise entry.fail("expect", f"must be a list of HTTP statuses, not {expect!r}", "write expect = [200, 201]")
    template = HttpTemplate(method, path, body, entry.get("body", str), entry.str_map("headers"), tuple(expect))
    for key, text in template.texts():
        for match in FIELD.finditer(text):
            if match.group(1):
                continue
            try:
                problem = scope.problem(parse_field(match.group(2)))
            except FieldError as exc:
                problem = str(exc)
            if problem:
                raise entry.fail(key, problem, FIELDS_FIX)
    return template


def _json_value(entry: Reader, node: Any) -> Any:
    """The json template; TOML dates and times have no JSON form."""
    if isinstance(node, list):
        return [_json_value(entry, item) for item in node]
    if isinstance(node, dict):
        return {key: _json_value(entry, item) for key, item in node.items()}
    if node is None or isinstance(node, str | int | float | bool):
        return node
    raise entry.fail("json", f"holds {node!r}, which JSON cannot carry", 'write it as a string: "2026-01-01"')
