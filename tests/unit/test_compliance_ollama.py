"""The Ollama rules on fake containers (their inspect data), and the image scope that disables
them on a stack running no Ollama image (no [disabled] line needed)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from stackcheck import stackfile
from stackcheck.compliance import runner
from stackcheck.compliance.model import Outcome, Policy
from stackcheck.compliance.ollama import pinned
from stackcheck.compliance.runner import CheckContext
from tests.unit.compliance_fakes import FakeStack, fake_handle

CHATBOT = Path(__file__).resolve().parents[2] / "stacks" / "chatbot" / "stack.toml"
POLICY = Policy.load()
HASH = "c42833d6c14c"


class Inspected:
    """A container's docker object: ``attrs`` as inspect returns them, reload() counted."""

    def __init__(self, env: list[str] | None = None, image: str = f"stackcheck/ollama-tiny:{HASH}") -> None:
        self.attrs = {"Config": {"Env": env or [], "Image": image, "Labels": {"org.stackcheck.hash": HASH}}}
        self.reloads = 0

    def reload(self) -> None:
        self.reloads += 1


def evaluate(rule_id: str, docker: Inspected, image: str = "ollama-tiny") -> tuple[Outcome, str]:
    stack = FakeStack([fake_handle("ollama", image, docker), fake_handle("web", "nginx")])
    [result] = runner.evaluate(POLICY.rules[rule_id], CheckContext(None, stack, POLICY))  # type: ignore[arg-type]
    assert docker.reloads == 1, "the check reads the container's state afresh"
    return result.outcome, result.evidence


@pytest.mark.parametrize(
    ("origins", "outcome", "evidence"),
    [
        (None, Outcome.PASS, "OLLAMA_ORIGINS unset: Ollama allows local origins only"),
        ("https://chat.example", Outcome.PASS, "OLLAMA_ORIGINS=https://chat.example"),
        ("*", Outcome.FAIL, "OLLAMA_ORIGINS=*: * lets any web page call the model API"),
        ("https://chat.example, http://*", Outcome.FAIL, "http://* lets any web page"),
        ("https://*:*", Outcome.FAIL, "https://*:* lets any web page"),
    ],
)
def test_ollama_origins_fails_on_any_origin(origins: str | None, outcome: Outcome, evidence: str) -> None:
    env = ["HOME=/var/lib/ollama"] + ([f"OLLAMA_ORIGINS={origins}"] if origins is not None else [])
    found = evaluate("ollama-origins", Inspected(env))
    assert found[0] is outcome
    assert evidence in found[1]


@pytest.mark.parametrize(
    ("reference", "is_pinned"),
    [
        (f"stackcheck/ollama-tiny:{HASH}", True),  # built by stackcheck: the tag is its content hash
        ("ollama/ollama@sha256:" + "a" * 64, True),
        ("registry.example:5000/ollama/ollama@sha256:" + "b" * 64, True),
        ("ollama/ollama:latest", False),
        ("ollama/ollama", False),
        ("registry.example:5000/ollama", False),  # a port, not a tag
        ("stackcheck/ollama-tiny:0.17.4", False),  # a version tag is mutable
    ],
)
def test_a_pinned_image_is_a_digest_or_the_content_hash_tag(reference: str, is_pinned: bool) -> None:
    assert pinned(reference, {"org.stackcheck.hash": HASH}) is is_pinned


def test_ollama_image_pinned_fails_on_a_mutable_tag() -> None:
    assert evaluate("ollama-image-pinned", Inspected())[0] is Outcome.PASS
    outcome, evidence = evaluate("ollama-image-pinned", Inspected(image="stackcheck-test/ollama-tiny:latest"))
    assert outcome is Outcome.FAIL
    assert evidence.startswith("image stackcheck-test/ollama-tiny:latest is not pinned")


def test_a_stack_without_an_ollama_image_has_the_rules_disabled_as_not_applicable() -> None:
    web = {"image": "nginx", "networks": {"edge": []}, "ports": [8080]}
    mini = {"stack": {"name": "mini"}, "networks": {"edge": {}}, "services": {"web": web}}
    disabled = runner.scoped_policy(stackfile.parse(mini, Path("stack.toml")), None).disabled
    for rule_id in ("ollama-origins", "ollama-image-pinned"):
        assert disabled[rule_id] == (
            "not applicable: no service runs an image in ['ollama', 'ollama-tiny'] (the policy's only_with_images)"
        )
    assert "pg-scram" not in disabled, "rules without the flag keep NOT EVALUATED (or an explicit [disabled])"
    chatbot = runner.scoped_policy(stackfile.load(CHATBOT), None).disabled
    assert not {"ollama-origins", "ollama-image-pinned"} & set(chatbot)


def test_the_stack_files_own_reason_wins_over_the_scope(tmp_path: Path) -> None:
    spec: Any = SimpleNamespace(
        policy=None, disabled={"ollama-origins": "our reason"}, services={"web": SimpleNamespace(image="nginx")}
    )
    disabled = runner.scoped_policy(spec, None).disabled
    assert disabled["ollama-origins"] == "our reason"
    assert disabled["ollama-image-pinned"].startswith("not applicable")


def test_judged_directly_on_a_stack_without_ollama_the_rule_is_not_evaluated() -> None:
    """Outside a scoped policy (the check called as such): NOT EVALUATED, never a pass."""
    spec = SimpleNamespace(name="mini", entry_service=None, services={}, links={})
    empty = FakeStack([fake_handle("web", "nginx")], spec=spec)
    [result] = runner.evaluate(POLICY.rules["ollama-origins"], CheckContext(None, empty, POLICY))  # type: ignore[arg-type]
    assert result.outcome is Outcome.NOT_EVALUATED
    assert "no service runs an image in ['ollama', 'ollama-tiny']" in result.evidence
