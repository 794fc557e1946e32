"""The chatbot's backup and restore drills (stacks/chatbot/hooks.py, design doc 002 section 10) on
the real stack: `stackcheck drill backup-restore` (server loss: a fresh stack restored from the
kept backup volume) meets its objectives and loses exactly the writes after the latest backup;
the corruption drill restores in place; a backup that skips a table and a restore from an older
file are each caught, with the ids of the writes they lost.

Run under the engine lock:
    flock /tmp/stackcheck-engine.lock .venv/bin/python -m pytest tests/integration/test_chatbot_backup.py
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.chaos.experiment import Experiment, ExperimentResult
from stackcheck.chaos.scenarios import load_hook
from stackcheck.stack import Stack
from stackcheck.stackfile import StackSpec

pytestmark = [pytest.mark.docker, pytest.mark.slow]

STACK_FILE = Path(__file__).resolve().parents[2] / "stacks" / "chatbot" / "stack.toml"
SPEC = stackfile.load(STACK_FILE)
CORRUPTION = SPEC.chaos.scenarios["backup-restore-corruption"]
# A table-by-table dump that forgets the messages table (and the sequence AUTOINCREMENT keeps for it).
SKIPS_MESSAGES = (
    "python3", "-c",
    "import json, sqlite3, time; t = time.time();"
    " name = time.strftime('%Y%m%dT%H%M%S', time.gmtime(t)) + f'{int(t % 1 * 1e6):06d}Z';"
    " path = f'/backups/chatbot-{name}.db'; src = sqlite3.connect('/data/chatbot.db');"
    " dst = sqlite3.connect(path);"
    " dst.executescript(chr(10).join(s for s in src.iterdump() if 'messages' not in s and 'sqlite_sequence' not in s));"
    " print(json.dumps({'file': path}))",
)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _built(own_images: Callable[[StackSpec], None]) -> None:
    own_images(SPEC)  # its own API image, whatever ran before


def hooks() -> ModuleType:
    assert CORRUPTION.hook is not None
    return sys.modules[load_hook(CORRUPTION.hook).__module__]


def corruption_drill(procedure: Any = None) -> ExperimentResult:
    """The corruption drill on a stack of its own, with the given backup procedure."""
    assert CORRUPTION.hook is not None
    with Stack(SPEC) as stack:
        result = load_hook(CORRUPTION.hook)(stack, Experiment(CORRUPTION.name, stack), CORRUPTION, procedure)  # type: ignore[call-arg]
    print(f"\n{result.summary()}")
    return result


def ids_in(breach: str) -> list[tuple[int, int]]:
    """The id ranges a breach names: RUN-1..40, RUN-52 -> [(1, 40), (52, 52)]."""
    spans = re.findall(r"backup-restore-corruption-[0-9a-f]{8}-(\d+)(?:\.\.(\d+))?", breach)
    return [(int(a), int(b or a)) for a, b in spans]


def test_stackcheck_drill_backup_restore_loses_exactly_the_writes_after_the_latest_backup(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "stackcheck.cli", "drill", "backup-restore", "--stack", str(STACK_FILE), "--no-history"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,
    )
    out = proc.stdout
    print(out[-6000:])
    assert proc.returncode == 0, f"{out[-3000:]}\n{proc.stderr[-2000:]}"
    assert "drill backup-restore: objectives met" in out
    assert "BREACH" not in out
    assert re.search(r"all [1-9]\d* writes acknowledged before the latest backup began survived the restore: ok", out)
    assert re.search(r"all [1-9]\d* writes sent after the latest backup ended are lost: ok", out)
    assert re.search(r"the data volume chatbot-[0-9a-f]{8}-chat-data is gone: ok", out)
    assert "the restored file is the latest backup" in out
    rto = float(re.search(r"RTO (\d+\.\d+)s", out).group(1))  # type: ignore[union-attr]
    assert rto > 1.0, "the RTO runs from the disaster to the restored data: a fresh stack boots in between"


def test_the_corruption_drill_restores_in_place() -> None:
    result = corruption_drill()
    assert result.passed, result.breaches
    assert result.rpo is not None
    assert result.rpo.lost, "writes after the latest backup must be lost: else the drill proved nothing"
    assert any("integrity check" in o for o in result.observations)


def test_a_backup_that_skips_a_table_is_caught_with_the_ids() -> None:
    result = corruption_drill(hooks().Procedure(backup=SKIPS_MESSAGES))
    assert not result.passed
    breach = next(b for b in result.breaches if "survived the restore" in b)
    assert "missing: backup-restore-corruption-" in breach
    assert "the backup left data out, or an older file was restored" in breach
    assert ids_in(breach)[0][0] == 1, f"every message is gone, from the first write: {breach}"


def restore_oldest(files: Sequence[str]) -> tuple[str, ...]:
    return ("python3", "-m", "chatbot_api.backup", "restore", files[0])


def test_a_restore_from_an_older_file_is_caught_with_the_ids() -> None:
    result = corruption_drill(hooks().Procedure(restore=restore_oldest))
    assert not result.passed
    assert any(b.startswith("the restored file is the latest backup") for b in result.breaches), result.breaches
    breach = next(b for b in result.breaches if "survived the restore" in b)
    spans = ids_in(breach)
    assert spans, breach
    assert spans[0][0] > 1, f"writes before the older backup survive; only those between the two are missing: {breach}"
