"""stackcheck.sharing without Docker: the shared run's state under its lock, and the traffic lock."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from stackcheck.errors import StackError
from stackcheck.sharing import Booted, SharedRun, TrafficLock


def booted(run_id: str = "minimal-1234", kept: bool = False) -> Booted:
    return Booted(run_id, {"web": "c0ffee"}, None, kept)


def test_the_first_process_boots_the_others_attach_and_the_last_to_finish_removes(tmp_path: Path) -> None:
    boots: list[str] = []
    removed: list[str] = []
    first, second = SharedRun(tmp_path, "gw0", 2), SharedRun(tmp_path, "gw1", 2)
    state = first.acquire(lambda: boots.append("gw0") or booted())
    assert (state.run_id, state.booted_by, state.live) == ("minimal-1234", "gw0", True)
    attached = second.acquire(lambda: boots.append("gw1") or booted("other"))
    assert (boots, attached.run_id, attached.containers) == (["gw0"], "minimal-1234", {"web": "c0ffee"})
    first.finish(removed.append)
    assert removed == [], "one worker is still at work"
    assert second.finish(removed.append).live is False
    assert removed == ["minimal-1234"]
    first.finish(removed.append)  # counted once per process
    assert removed == ["minimal-1234"]


def test_a_process_that_never_read_the_stack_still_counts(tmp_path: Path) -> None:
    removed: list[str] = []
    SharedRun(tmp_path, "gw1", 2).finish(removed.append)  # done before anyone booted
    run = SharedRun(tmp_path, "gw0", 2)
    run.acquire(booted)
    run.finish(removed.append)
    assert removed == ["minimal-1234"]


def test_a_failed_boot_is_the_others_error_too_not_a_second_boot(tmp_path: Path) -> None:
    def fails() -> Booted:
        raise StackError("stack minimal failed to boot: nginx exited", "read its log")

    with pytest.raises(StackError, match="nginx exited"):
        SharedRun(tmp_path, "gw0", 2).acquire(fails)
    with pytest.raises(StackError, match=r"failed to boot in worker gw0: StackError: stack minimal .*nginx exited"):
        SharedRun(tmp_path, "gw1", 2).acquire(booted)


def test_a_kept_stack_is_left_running_and_a_dead_workers_stack_is_removed_at_the_end(tmp_path: Path) -> None:
    removed: list[str] = []
    kept = SharedRun(tmp_path / "kept", "gw0", 1)
    kept.acquire(lambda: booted(kept=True))
    kept.finish(removed.append)
    assert SharedRun(tmp_path / "kept", "controller", 0).remove_leftover(removed.append) is None
    died = SharedRun(tmp_path / "died", "gw0", 2)
    died.acquire(booted)  # gw0 dies: it never finishes; gw1 finishes
    SharedRun(tmp_path / "died", "gw1", 2).finish(removed.append)
    assert removed == []
    assert SharedRun(tmp_path / "died", "controller", 0).remove_leftover(removed.append) == "minimal-1234"
    assert removed == ["minimal-1234"]


def test_a_waiting_writer_stops_new_readers_and_runs_alone(tmp_path: Path) -> None:
    lock = TrafficLock(tmp_path)
    order: list[str] = []
    reader_in = threading.Event()

    def reader(name: str, hold_s: float) -> None:
        with lock.shared():
            order.append(f"{name} in")
            reader_in.set()
            time.sleep(hold_s)
            order.append(f"{name} out")

    def writer() -> None:
        with lock.exclusive():
            order.append("writer in")
            time.sleep(0.2)
            order.append("writer out")

    first = threading.Thread(target=reader, args=("r1", 0.5))
    first.start()
    reader_in.wait()
    waiting = threading.Thread(target=writer)
    waiting.start()
    time.sleep(0.1)  # the writer now waits for r1, at the turnstile's far side
    late = threading.Thread(target=reader, args=("r2", 0.0))
    late.start()
    for thread in (first, waiting, late):
        thread.join(5)
    assert order == ["r1 in", "r1 out", "writer in", "writer out", "r2 in", "r2 out"]
