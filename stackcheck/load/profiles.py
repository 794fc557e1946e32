"""Load profiles as data: piecewise-linear stages of a load level over time.

In closed-loop mode the level is a number of users (each waits ``wait_s`` between requests); in
open-loop mode it is an arrival rate of ``level * rps_per_level`` requests per second, sent on
schedule whether or not earlier requests have answered.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from stackcheck.load.errors import LoadError


class Mode(Enum):
    CLOSED = "closed"  # users with think time: throughput follows latency
    OPEN = "open"  # constant arrival rate: latency measured from the intended send time


@dataclass(frozen=True)
class Stage:
    duration_s: float
    target: float  # users (closed) or load level (open); reached linearly by the end of the stage


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    stages: tuple[Stage, ...]
    wait_s: tuple[float, float] = (0.05, 0.15)  # closed-loop think time, uniform
    rps_per_level: float = 8.0  # open loop: one level unit sends this many requests/s
    warmup_s: float = 2.0  # intervals ignored by the regression test (pools and caches warming)

    @property
    def duration_s(self) -> float:
        return sum(s.duration_s for s in self.stages)

    @property
    def peak(self) -> float:
        return max(s.target for s in self.stages)

    def level_at(self, t: float) -> float:
        """The load level ``t`` seconds into the run (linear ramps from 0, like k6 stages)."""
        start, previous = 0.0, 0.0
        for stage in self.stages:
            if t < start + stage.duration_s:
                return previous + (stage.target - previous) * (t - start) / stage.duration_s
            start, previous = start + stage.duration_s, stage.target
        return previous

    def scaled(self, factor: float) -> Profile:
        """The same shape with every duration multiplied by ``factor``."""
        if factor <= 0:
            raise LoadError(f"time scale {factor} is not positive", "pass a factor > 0, e.g. 0.05")
        return replace(self, stages=tuple(Stage(s.duration_s * factor, s.target) for s in self.stages))

    def with_duration(self, seconds: float) -> Profile:
        """Rescaled in time to last ``seconds``."""
        return self.scaled(seconds / self.duration_s)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "stages": [[s.duration_s, s.target] for s in self.stages],
            "wait_s": list(self.wait_s),
            "rps_per_level": self.rps_per_level,
            "warmup_s": self.warmup_s,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Profile:
        return cls(
            name=data["name"],
            description=data["description"],
            stages=tuple(Stage(float(d), float(t)) for d, t in data["stages"]),
            wait_s=(float(data["wait_s"][0]), float(data["wait_s"][1])),
            rps_per_level=float(data["rps_per_level"]),
            warmup_s=float(data["warmup_s"]),
        )


# Design doc 003's k6 stages: 2m->10, 5m@10, 2m->50, 5m@50, 10m->0 (24 minutes at scale 1).
K6_STAGES = (Stage(120, 10), Stage(300, 10), Stage(120, 50), Stage(300, 50), Stage(600, 0))
STAGES_TIME_SCALE = 0.05  # 72 s: CI-sized, same shape

PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile("smoke", "CI default: ramp to 8 users in 3 s, hold (20 s)", (Stage(3, 8), Stage(17, 8))),
        Profile("steady", "constant 20 users for 60 s", (Stage(5, 20), Stage(55, 20))),
        Profile(
            "stages",
            f"design doc 003's k6 stages, time-scaled by {STAGES_TIME_SCALE}",
            tuple(Stage(s.duration_s * STAGES_TIME_SCALE, s.target) for s in K6_STAGES),
            wait_s=(0.8, 1.2),  # the k6 script's sleep(1)
            rps_per_level=1.0,
        ),
        Profile(
            "spike",
            "5 users, a 1 s jump to 40 held 10 s, back to 5 (30 s)",
            (Stage(2, 5), Stage(8, 5), Stage(1, 40), Stage(10, 40), Stage(1, 5), Stage(8, 5)),
        ),
    )
}


def get(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        raise LoadError(f"no load profile {name!r}", f"use one of: {', '.join(PROFILES)}") from None
