"""The experiment journal: typed, timestamped events (monotonic for durations, wall clock for
people), in the order they happened. Faults, meters and experiments all write to one."""

from __future__ import annotations

import threading
import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any


class EventKind(Enum):
    STEADY_STATE = "steady_state"
    FAULT_START = "fault_start"
    FAULT_END = "fault_end"
    FIRST_ERROR = "first_error"
    RECOVERED = "recovered"
    ACTION = "action"  # a scripted step, e.g. promoting a replica
    VERIFY = "verify"
    ROLLBACK = "rollback"
    NOTE = "note"


@dataclass(frozen=True)
class Event:
    kind: EventKind
    name: str
    mono: float  # time.monotonic()
    wall: float  # time.time()
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


@dataclass
class Journal:
    events: list[Event] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, kind: EventKind, name: str, detail: str = "") -> Event:
        event = Event(kind, name, time.monotonic(), time.time(), detail)
        with self._lock:
            self.events.append(event)
        return event

    def find(self, kind: EventKind, name: str | None = None) -> list[Event]:
        return [e for e in self.events if e.kind is kind and (name is None or e.name == name)]

    def window(self, name: str) -> tuple[float, float] | None:
        """Monotonic start and end of the named fault, when both were recorded."""
        starts, ends = self.find(EventKind.FAULT_START, name), self.find(EventKind.FAULT_END, name)
        return (starts[0].mono, ends[-1].mono) if starts and ends else None

    def timeline(self) -> str:
        if not self.events:
            return "(empty journal)"
        origin = self.events[0].mono
        return "\n".join(
            f"  {e.mono - origin:8.3f}s  {e.kind.value:<12} {e.name}{': ' + e.detail if e.detail else ''}"
            for e in self.events
        )

    def to_dicts(self) -> list[dict[str, Any]]:
        return [e.to_dict() for e in self.events]
