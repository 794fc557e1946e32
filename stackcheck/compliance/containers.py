"""Container rules, read from the running containers (docker inspect and top), not the images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.stack import ServiceHandle

LOOPBACK = {"127.0.0.1", "::1"}
SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")


def _per_container(
    rule: Rule,
    ctx: CheckContext,
    verdict: Callable[[ServiceHandle, dict[str, Any]], tuple[str | None, str]],
    services: list[str] | None = None,
) -> list[Result]:
    """Apply ``verdict(handle, inspect) -> (problem or None, evidence)`` to every non-exempt
    container (of ``services`` only, when given); not applicable when there is none to judge."""
    stack = ctx.require_stack(rule)
    exempt = set(rule.param("exempt")) if "exempt" in rule.params else set()
    handles = [h for h in stack.handles() if services is None or h.service.name in services]
    if services == []:
        raise not_applicable(
            rule, "the rule lists no service (services = [])", f"name them in [rules.{rule.id}] services in the policy"
        )
    if not handles:
        missing = "the stack has no container" if services is None else f"no container runs a service in {services}"
        raise not_applicable(rule, missing)
    out = []
    for handle in handles:
        if handle.service.name in exempt:
            out.append(Result(rule, Outcome.EXEMPT, handle.name, "exempt by policy"))
            continue
        handle.docker.reload()
        problem, evidence = verdict(handle, handle.docker.attrs)
        out.append(Result(rule, Outcome.FAIL if problem else Outcome.PASS, handle.name, problem or evidence))
    return out


def process_uids(handle: ServiceHandle) -> list[int]:
    top = handle.docker.top(ps_args="-o pid,uid,comm")
    col = top["Titles"].index("UID")
    return [int(row[col]) for row in top["Processes"] or []]


def configured_user(attrs: dict[str, Any]) -> str:
    return str(attrs["Config"].get("User") or "")


def user_is_root(user: str) -> bool:
    name = user.split(":")[0]
    return name in ("", "0", "root")


@check("containers-non-root")
def non_root(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(handle: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        user = configured_user(attrs)
        uids = process_uids(handle)
        evidence = f"user {user!r}, process uids {sorted(set(uids))}"
        if user_is_root(user):
            return f"configured user is root ({user or 'unset'}); {evidence}", evidence
        if 0 in uids:
            return f"a process runs as uid 0; {evidence}", evidence
        return None, evidence

    return _per_container(rule, ctx, verdict)


def privileged_problem(attrs: dict[str, Any]) -> str | None:
    return "runs privileged" if attrs["HostConfig"].get("Privileged") else None


@check("containers-not-privileged")
def not_privileged(rule: Rule, ctx: CheckContext) -> list[Result]:
    return _per_container(rule, ctx, lambda _, attrs: (privileged_problem(attrs), "not privileged"))


@check("containers-capabilities")
def capabilities(rule: Rule, ctx: CheckContext) -> list[Result]:
    drop_all = bool(rule.param("require_drop_all"))

    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        added = attrs["HostConfig"].get("CapAdd") or []
        dropped = [c.upper() for c in attrs["HostConfig"].get("CapDrop") or []]
        evidence = f"cap_add {added}, cap_drop {dropped}"
        if added:
            return f"adds capabilities {added}", evidence
        if drop_all and "ALL" not in dropped:
            return f"does not drop ALL capabilities ({evidence})", evidence
        return None, evidence

    return _per_container(rule, ctx, verdict)


@check("containers-no-docker-socket")
def no_docker_socket(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        sources = [m.get("Source", "") for m in attrs.get("Mounts", [])]
        hits = [s for s in sources if s.endswith(SOCKETS)]
        return (
            f"mounts the Docker socket {hits}" if hits else None
        ), f"{len(sources)} mounts, none is the Docker socket"

    return _per_container(rule, ctx, verdict)


@check("containers-read-only-rootfs")
def read_only_rootfs(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        read_only = bool(attrs["HostConfig"].get("ReadonlyRootfs"))
        return (None if read_only else "root filesystem is writable"), "root filesystem is read-only"

    # Only the listed services are subjects: a container the rule does not require is no pass.
    return _per_container(rule, ctx, verdict, services=list(rule.param("services")))


@check("containers-healthcheck")
def healthcheck(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        test = (attrs["Config"].get("Healthcheck") or {}).get("Test") or []
        if not test or test[0] == "NONE":
            return "no healthcheck defined", ""
        return None, f"healthcheck {' '.join(test[1:])[:60]}"

    return _per_container(rule, ctx, verdict)


@check("containers-resource-limits")
def resource_limits(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        host = attrs["HostConfig"]
        memory = host.get("Memory") or 0
        cpus = (host.get("NanoCpus") or 0) / 1e9 or ((host.get("CpuQuota") or 0) / (host.get("CpuPeriod") or 100000))
        evidence = f"memory {memory / 2**20:.0f} MiB, cpus {cpus:g}"
        missing = [name for name, value in (("memory", memory), ("cpu", cpus)) if not value]
        return (f"no {' and no '.join(missing)} limit ({evidence})" if missing else None), evidence

    return _per_container(rule, ctx, verdict)


def image_problem(reference: str) -> str | None:
    name = reference.split("@")[0]
    tag = name.rsplit(":", 1)[1] if ":" in name.rsplit("/", 1)[-1] else None
    if "@sha256:" in reference:
        return None
    if tag is None:
        return f"image {reference} has no tag (means latest)"
    if tag == "latest":
        return f"image {reference} is tagged latest"
    return None


@check("containers-image-pinned")
def image_pinned(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        reference = attrs["Config"]["Image"]
        return image_problem(reference), f"image {reference}"

    return _per_container(rule, ctx, verdict)


def public_bindings(attrs: dict[str, Any], data_ports: set[int]) -> list[str]:
    """Data ports bound (configured, or actually) to an address other than loopback."""
    found = []
    for source in (attrs["HostConfig"].get("PortBindings") or {}, attrs["NetworkSettings"].get("Ports") or {}):
        for port_proto, bindings in source.items():
            if int(port_proto.split("/")[0]) not in data_ports:
                continue
            for binding in bindings or []:
                host_ip = binding.get("HostIp") or "0.0.0.0"  # empty means every interface
                if host_ip not in LOOPBACK:
                    found.append(f"{port_proto} on {host_ip}:{binding.get('HostPort') or '*'}")
    return sorted(set(found))


@check("containers-no-public-data-ports")
def no_public_data_ports(rule: Rule, ctx: CheckContext) -> list[Result]:
    data_ports = set(rule.param("data_ports"))

    def verdict(_: ServiceHandle, attrs: dict[str, Any]) -> tuple[str | None, str]:
        public = public_bindings(attrs, data_ports)
        return (
            f"data port published beyond loopback: {', '.join(public)}" if public else None
        ), "data ports only on loopback (or unpublished)"

    return _per_container(rule, ctx, verdict)
