"""Ollama's weak spots (design doc 000), read from the running model server's container.

The policy picks the servers by image (``images``); with ``only_with_images = true`` a stack
that runs none of them has the rules DISABLED as not applicable (runner.scoped_policy).
Two more weak spots are the generic container rules: root (containers-non-root) and the API
published beyond loopback (containers-no-public-data-ports, whose data ports include 11434).
"""

from __future__ import annotations

import re

from stackcheck import images
from stackcheck.compliance.datastores import image_instances
from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check
from stackcheck.stack import ServiceHandle

ANY_ORIGIN = re.compile(r"^(\*|[a-z][a-z0-9+.-]*://\*(:\*)?)$")  # "*", "https://*", "http://*:*"
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")


def _env(handle: ServiceHandle) -> dict[str, str]:
    handle.docker.reload()  # the container's configuration now, not a cached copy
    pairs = (item.partition("=") for item in handle.docker.attrs["Config"].get("Env") or [])
    return {key: value for key, _, value in pairs}


@check("ollama-origins")
def origins(rule: Rule, ctx: CheckContext) -> list[Result]:
    _, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        value = _env(handle).get("OLLAMA_ORIGINS")
        wide = [o.strip() for o in (value or "").split(",") if ANY_ORIGIN.match(o.strip())]
        if value is None:
            evidence = "OLLAMA_ORIGINS unset: Ollama allows local origins only"
        elif wide:
            evidence = f"OLLAMA_ORIGINS={value}: {', '.join(wide)} lets any web page call the model API"
        else:
            evidence = f"OLLAMA_ORIGINS={value}"
        out.append(Result(rule, Outcome.FAIL if wide else Outcome.PASS, handle.name, evidence))
    return out


def pinned(reference: str, labels: dict[str, str]) -> bool:
    """A digest reference, or the content-hash tag stackcheck built the image with."""
    if DIGEST.search(reference):
        return True
    name, _, tag = reference.rpartition(":")
    return bool(name) and "/" not in tag and tag == labels.get(f"{images.LABEL}.hash")


@check("ollama-image-pinned")
def image_pinned(rule: Rule, ctx: CheckContext) -> list[Result]:
    _, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        handle.docker.reload()
        config = handle.docker.attrs["Config"]
        reference, labels = str(config.get("Image") or ""), dict(config.get("Labels") or {})
        if pinned(reference, labels):
            out.append(Result(rule, Outcome.PASS, handle.name, f"image {reference} (pinned)"))
        else:
            problem = (
                f"image {reference} is not pinned: a mutable tag can be replaced under the same name "
                "(reference it by digest, NAME@sha256:..., or let stackcheck build it: a content-hash tag)"
            )
            out.append(Result(rule, Outcome.FAIL, handle.name, problem))
    return out
