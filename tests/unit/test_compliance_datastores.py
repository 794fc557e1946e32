"""Which Redis user the application connects as, read from the stack file (the user
redis-dangerous-commands checks), without booting anything."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

from stackcheck import stackfile
from stackcheck.compliance.datastores import redis_users
from stackcheck.stack import DEFAULT_STACK

REFERENCE = tomllib.loads(DEFAULT_STACK.read_text())


def spec(mutate: Any = None, path: Path = DEFAULT_STACK) -> stackfile.StackSpec:
    data = copy.deepcopy(REFERENCE)
    if mutate:
        mutate(data)
    return stackfile.parse(data, path)


def test_the_reference_backend_connects_as_the_default_user_through_its_link() -> None:
    """Its REDIS_URL_FILE holds redis://:PASSWORD@${link.backend->redis}/0: no user, via Toxiproxy."""
    assert redis_users(spec(), "redis") == {"default": ["backend"]}


def test_a_named_user_in_the_mounted_url_is_the_application_user() -> None:
    def named(data: dict[str, Any]) -> None:
        files = data["services"]["backend"]["files"]
        files["/run/secrets/redis_url"] = "redis://app:${secret.redis}@${link.backend->redis}/0"

    assert redis_users(spec(named), "redis") == {"app": ["backend"]}


def test_urls_in_env_direct_hosts_tls_and_encoded_users_are_read() -> None:
    def clients(data: dict[str, Any]) -> None:
        data["services"]["worker"] = {
            "image": "python",
            "networks": {"internal": []},
            "env": {"CACHE_URL": "rediss://jobs%2Dworker:${secret.redis}@redis:6379/1", "OTHER": "x"},
        }
        data["services"]["nginx"]["env"] = {"SESSIONS": "redis://sessions:pw@redis/2 and redis://sessions@redis"}

    assert redis_users(spec(clients), "redis") == {
        "default": ["backend"],
        "jobs-worker": ["worker"],
        "sessions": ["nginx"],
    }


def test_a_url_naming_another_host_is_not_a_client_of_this_redis() -> None:
    def elsewhere(data: dict[str, Any]) -> None:
        files = data["services"]["backend"]["files"]
        files["/run/secrets/redis_url"] = "redis://app:pw@cache.internal:6379/0"

    assert redis_users(spec(elsewhere), "redis") == {}


def test_a_url_in_a_template_file_counts(tmp_path: Path) -> None:
    (tmp_path / "app.ini").write_text("[cache]\nurl = redis://reporting:secret@redis:6379/3\n")

    def templated(data: dict[str, Any]) -> None:
        # An absolute path: the stack file stays the reference one (its other files resolve next to it).
        data["services"]["backend"]["files"] = {"/etc/app.ini": {"template_file": str(tmp_path / "app.ini")}}
        data["services"]["backend"]["env"] = {}
        data["services"]["nginx"]["files"] = {}

    assert redis_users(spec(templated), "redis") == {"reporting": ["backend"]}


def test_no_client_means_no_known_application_user() -> None:
    def alone(data: dict[str, Any]) -> None:
        data["services"]["backend"]["files"].pop("/run/secrets/redis_url")
        data["services"]["backend"]["env"].pop("REDIS_URL_FILE")

    assert redis_users(spec(alone), "redis") == {}
