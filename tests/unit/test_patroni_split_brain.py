"""The Patroni drills' split-brain judgement (stacks/patroni/hooks.py), on fake ledgers: which
member acknowledged each write, on which timeline, when."""

from __future__ import annotations

from typing import Any

import pytest

from stackcheck import resources
from stackcheck.chaos.scenarios import load_hook
from stackcheck.chaos.spec import Hook

ADDRESSES = {"10.0.1.2": "patroni-1", "10.0.1.3": "patroni-2"}


@pytest.fixture(scope="module")
def split_brain() -> Any:
    return load_hook(Hook(resources.stacks_dir() / "patroni" / "hooks.py", "split_brain"))


def test_a_failover_hands_the_writes_over(split_brain: Any) -> None:
    """patroni-1 acknowledges 1-3 on timeline 1, then (after the failover) patroni-2 4-6 on timeline 2."""
    served = {n: ("10.0.1.2", 1, float(n)) for n in (1, 2, 3)} | {n: ("10.0.1.3", 2, float(n)) for n in (4, 5, 6)}
    assert split_brain(served, ADDRESSES) is None


def test_an_old_leader_acknowledging_after_the_new_one_began_is_split_brain(split_brain: Any) -> None:
    served = {1: ("10.0.1.2", 1, 1.0), 2: ("10.0.1.3", 2, 2.0), 1000003: ("10.0.1.2", 1, 3.0), 4: ("10.0.1.3", 2, 4.0)}
    assert split_brain(served, ADDRESSES) == (
        "split brain: patroni-1 (timeline 1) acknowledged 1 writes (ids [1000003]) after patroni-2 (timeline 2) had "
        "acknowledged id 2"
    )


def test_an_unknown_address_is_named_as_it_is(split_brain: Any) -> None:
    served = {1: ("10.9.9.9", 1, 1.0), 2: ("10.0.1.3", 2, 2.0), 3: ("10.9.9.9", 1, 3.0)}
    assert split_brain(served, ADDRESSES).startswith("split brain: 10.9.9.9 (timeline 1) acknowledged 1 writes")


def test_no_writes_no_split_brain(split_brain: Any) -> None:
    assert split_brain({}, ADDRESSES) is None
