"""Data-store hardening rules: PostgreSQL and Redis settings read from the running servers.

Services are picked by image name (policy ``images``); credentials come from the service's
environment as stackcheck's postgres and redis images name them (see Stack.postgres/redis).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check, not_applicable
from stackcheck.stack import ServiceHandle, Stack
from stackcheck.stackfile import PLACEHOLDER, StackSpec

REDIS_URL = re.compile(r"rediss?://[^\s\"'<>]+")


def image_instances(rule: Rule, ctx: CheckContext) -> tuple[Stack, list[ServiceHandle]]:
    """The stack and its containers running one of the rule's images; NotEvaluated when none does."""
    stack = ctx.require_stack(rule)
    images = rule.param("images")
    handles = [h for h in stack.handles() if h.service.image in images]
    if not handles:
        raise not_applicable(rule, f"no service runs an image in {images}")
    return stack, handles


def _each(
    rule: Rule, ctx: CheckContext, verdict: Callable[[Stack, ServiceHandle], tuple[str | None, str]]
) -> list[Result]:
    stack, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        problem, evidence = verdict(stack, handle)
        out.append(Result(rule, Outcome.FAIL if problem else Outcome.PASS, handle.name, problem or evidence))
    return out


def _pg_setting(stack: Stack, handle: ServiceHandle, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with stack.postgres(handle.name, superuser=True) as conn:
        return conn.execute(sql, params).fetchall()


@check("pg-scram")
def pg_scram(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        value = _pg_setting(stack, handle, "SHOW password_encryption")[0][0]
        return (
            None if value == "scram-sha-256" else f"password_encryption = {value}"
        ), f"password_encryption = {value}"

    return _each(rule, ctx, verdict)


@check("pg-no-trust")
def pg_no_trust(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        rows = _pg_setting(
            stack,
            handle,
            "SELECT line_number, type, database, user_name, address FROM pg_hba_file_rules WHERE auth_method = 'trust'",
        )
        lines = [f"line {n}: {t} {','.join(d or [])} {','.join(u or [])} {a or ''}".strip() for n, t, d, u, a in rows]
        return (
            f"pg_hba.conf trusts without a password: {'; '.join(lines)}" if lines else None
        ), "no trust rule in pg_hba.conf"

    return _each(rule, ctx, verdict)


@check("pg-ssl")
def pg_ssl(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        value = _pg_setting(stack, handle, "SHOW ssl")[0][0]
        return (None if value == "on" else f"ssl = {value}"), f"ssl = {value}"

    return _each(rule, ctx, verdict)


@check("pg-app-not-superuser")
def pg_app_not_superuser(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        app_user = dict(handle.service.env).get("POSTGRES_APP_USER")
        if not app_user:
            return "no application role (POSTGRES_APP_USER): the application would use the superuser", ""
        rows = _pg_setting(stack, handle, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (app_user,))
        if not rows:
            return f"application role {app_user!r} does not exist", ""
        return (
            f"application role {app_user!r} is a superuser" if rows[0][0] else None
        ), f"role {app_user!r}: rolsuper false"

    return _each(rule, ctx, verdict)


@check("pg-stat-statements")
def pg_stat_statements(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        value = _pg_setting(stack, handle, "SHOW shared_preload_libraries")[0][0]
        ok = "pg_stat_statements" in value
        return (None if ok else f"shared_preload_libraries = {value!r}"), f"shared_preload_libraries = {value!r}"

    return _each(rule, ctx, verdict)


def _privileged_redis(stack: Stack, handle: ServiceHandle) -> redis.Redis:
    """The admin user where one is configured; otherwise the default user (with its password, if any)."""
    env = {k: stack.render(v) for k, v in handle.service.env.items()}
    return stack.redis(handle.name, admin=bool(env.get("REDIS_ADMIN_PASSWORD")))


@check("redis-auth-required")
def redis_auth_required(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        anonymous = redis.Redis(host="127.0.0.1", port=handle.port(6379), socket_timeout=5)
        try:
            anonymous.ping()
        except redis.AuthenticationError as exc:
            return None, f"unauthenticated PING refused: {exc}"
        except redis.ResponseError as exc:
            return (
                (None, f"unauthenticated PING refused: {exc}") if "NOAUTH" in str(exc) else (f"unexpected: {exc}", "")
            )
        finally:
            anonymous.close()
        return "an unauthenticated PING answers PONG", ""

    return _each(rule, ctx, verdict)


@check("redis-default-user")
def redis_default_user(rule: Rule, ctx: CheckContext) -> list[Result]:
    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        with _privileged_redis(stack, handle) as client:
            flags = [f.decode() if isinstance(f, bytes) else f for f in client.acl_getuser("default")["flags"]]
        return ("the default user is nopass" if "nopass" in flags else None), f"default user flags {flags}"

    return _each(rule, ctx, verdict)


def redis_users(spec: StackSpec, service: str) -> dict[str, list[str]]:
    """The users other services connect to ``service`` as (user -> client services), read from
    every redis:// URL in their env and mounted files; a URL without a user means ``default``."""
    target = spec.services[service]
    names = {service, *target.instances(), *(a for aliases in target.networks.values() for a in aliases)}

    def resolved(text: str) -> str:
        # A link stands for its upstream (the client reaches it through Toxiproxy); other
        # placeholders (secrets) are not part of where or as whom the client connects.
        return PLACEHOLDER.sub(
            lambda m: spec.links[m.group(2)].upstream if m.group(1) == "link" and m.group(2) in spec.links else "x",
            text,
        )

    users: dict[str, list[str]] = {}
    for client in spec.services.values():
        if client.name == service:
            continue
        texts = [*client.env.values()]
        for file in client.files:
            if file.template is not None:
                texts.append(file.template)
            elif file.source is not None:
                texts.append(file.source.read_text(errors="replace"))
        for url in (u for text in texts for u in REDIS_URL.findall(resolved(text))):
            parts = urlsplit(url)
            if parts.hostname in names:
                clients = users.setdefault(unquote(parts.username or "") or "default", [])
                if client.name not in clients:
                    clients.append(client.name)
    return users


# ACL DRYRUN needs a well-formed command line: harmless arguments for commands that take some.
DRYRUN_ARGS = {"CONFIG": ["GET", "maxmemory"], "DEBUG": ["SLEEP", "0"], "SHUTDOWN": ["NOSAVE"], "KEYS": ["*"]}


def _text(answer: Any) -> str:
    return answer.decode() if isinstance(answer, bytes) else str(answer)


@check("redis-dangerous-commands")
def redis_dangerous_commands(rule: Rule, ctx: CheckContext) -> list[Result]:
    commands = [c.upper() for c in rule.param("commands")]
    stack, handles = image_instances(rule, ctx)
    out = []
    for handle in handles:
        users = redis_users(stack.spec, handle.service.name)
        if not users:
            reason = (
                f"no service connects to {handle.service.name} (no redis:// URL naming it in an env value "
                "or mounted file): the application's user is unknown"
            )
            out.append(Result(rule, Outcome.NOT_EVALUATED, handle.name, reason))
            continue
        with _privileged_redis(stack, handle) as client:
            for user, clients in sorted(users.items()):
                subject = f"{handle.name} user {user} ({', '.join(clients)})"
                try:
                    # ACL DRYRUN answers OK when the user may run the command, an explanation when not.
                    allowed = [
                        c
                        for c in commands
                        if _text(client.execute_command("ACL", "DRYRUN", user, c, *DRYRUN_ARGS.get(c, []))) == "OK"
                    ]
                except redis.ResponseError as exc:
                    if f"User '{user}' not found" not in str(exc):
                        raise
                    out.append(
                        Result(rule, Outcome.FAIL, subject, f"the application user {user!r} does not exist: {exc}")
                    )
                    continue
                problem = f"the application user {user!r} may run {', '.join(allowed)}" if allowed else None
                evidence = f"the application user {user!r} is denied {', '.join(commands)}"
                out.append(Result(rule, Outcome.FAIL if problem else Outcome.PASS, subject, problem or evidence))
    return out
