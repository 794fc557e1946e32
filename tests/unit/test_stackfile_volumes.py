"""Named volumes in a stack file: ``[volumes.NAME]`` and a service's ``volumes = ["NAME:/path[:ro|rw]"]``
parse into typed mounts; every mistake is one StackFileError naming the file, the key and the fix."""

from __future__ import annotations

import copy
import tomllib
from collections.abc import Callable
from typing import Any

import pytest

from stackcheck import resources, stackfile
from stackcheck.errors import StackFileError

PATH = resources.reference_stack().parent.parent / "chatbot" / "stack.toml"
CHATBOT = tomllib.loads(PATH.read_text())


def chatbot() -> dict[str, Any]:
    return copy.deepcopy(CHATBOT)


def parse(data: dict[str, Any]) -> stackfile.StackSpec:
    return stackfile.parse(data, PATH)


def test_the_chatbot_mounts_its_data_and_backup_volumes() -> None:
    spec = parse(chatbot())
    assert set(spec.volumes) == {"chat-data", "backups"}
    assert spec.services["api"].volumes == (
        stackfile.VolumeMount("chat-data", "/data"),
        stackfile.VolumeMount("backups", "/backups"),
    )
    assert spec.services["nginx"].volumes == ()


def test_a_mount_may_be_read_only_or_shared_by_two_services() -> None:
    data = chatbot()
    data["services"]["nginx"]["volumes"] = ["backups:/srv/backups:ro"]
    spec = parse(data)
    assert spec.services["nginx"].volumes == (stackfile.VolumeMount("backups", "/srv/backups", read_only=True),)
    assert spec.services["api"].volumes[1] == stackfile.VolumeMount("backups", "/backups", read_only=False)


def test_a_stack_without_volumes_has_none() -> None:
    data = chatbot()
    del data["volumes"]
    for svc in data["services"].values():
        svc.pop("volumes", None)
    spec = parse(data)
    assert spec.volumes == {}
    assert all(svc.volumes == () for svc in spec.services.values())


def _api(**changes: Any) -> Callable[[dict[str, Any]], None]:
    return lambda d: d["services"]["api"].update(changes)


@pytest.mark.parametrize(
    ("mutate", "message", "fix"),
    [
        (_api(volumes="chat-data:/data"), r"\[services\.api\.volumes\] must be list", "list"),
        (_api(volumes=[1]), r"\[services\.api\.volumes\] must be a list of strings", 'volumes = ["..."]'),
        (_api(volumes=["chat-data"]), r"'chat-data' is not NAME:/path\[:ro\|rw\]", 'volumes = ["chat-data:/data"]'),
        (_api(volumes=["chat-data:data"]), r"'chat-data:data' is not NAME:/path", "NAME:/path[:ro|rw]"),
        (_api(volumes=[":/data"]), r"':/data' is not NAME:/path", "NAME:/path[:ro|rw]"),
        (_api(volumes=["chat-data:/data:rx"]), r"'chat-data:/data:rx' is not NAME:/path", "NAME:/path[:ro|rw]"),
        (_api(volumes=["chat-data:/data:ro:z"]), r"is not NAME:/path", "NAME:/path[:ro|rw]"),
        (
            _api(volumes=["chat-dta:/data", "backups:/backups"]),
            r"\[services\.api\.volumes\] 'chat-dta:/data' names 'chat-dta', which is not a volume of this stack "
            r"\(chat-data, backups\)",
            "add a table [volumes.chat-dta]",
        ),
        (
            _api(volumes=["chat-data:/data", "backups:/data/"]),
            r"'backups:/data/': /data/ is mounted twice",
            "its own path",
        ),
        (_api(volumes=["chat-data:/tmp", "backups:/backups"]), r"'chat-data:/tmp': /tmp is mounted twice", "own path"),
        (
            _api(volumes=["chat-data:/data"]),
            r"\[volumes\.backups\] is declared but no service mounts it",
            'add "backups:/path" to a service\'s volumes',
        ),
        (lambda d: d["volumes"].update({"Bad_Name": {}}), r"\[volumes\.Bad_Name\] is not a valid volume name", "-"),
        (
            lambda d: d["volumes"]["backups"].update(driver="nfs"),
            r"\[volumes\.backups\.driver\] is not a known key",
            "use one of",
        ),
        (lambda d: d.update(volumes={"backups": "yes"}), r"\[volumes\.backups\] must be dict", "dict"),
    ],
)
def test_each_volume_mistake_is_one_clear_error(
    mutate: Callable[[dict[str, Any]], None], message: str, fix: str
) -> None:
    data = chatbot()
    mutate(data)
    with pytest.raises(StackFileError, match=message) as err:
        parse(data)
    assert str(PATH) in err.value.problem
    assert fix in err.value.fix
