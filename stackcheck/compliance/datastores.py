"""Data-store hardening rules: PostgreSQL and Redis settings read from the running servers.

Services are picked by image name (policy ``images``); credentials come from the service's
environment as stackcheck's postgres and redis images name them (see Stack.postgres/redis).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import redis

from stackcheck.compliance.model import Outcome, Result, Rule
from stackcheck.compliance.runner import CheckContext, check
from stackcheck.stack import ServiceHandle, Stack


def _instances(stack: Stack, images: list[str]) -> list[ServiceHandle]:
    return [h for h in stack.handles() if h.service.image in images]


def _each(
    rule: Rule, ctx: CheckContext, verdict: Callable[[Stack, ServiceHandle], tuple[str | None, str]]
) -> list[Result]:
    stack = ctx.require_stack(rule)
    out = []
    for handle in _instances(stack, rule.param("images")):
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


# ACL DRYRUN needs a well-formed command line: harmless arguments for commands that take some.
DRYRUN_ARGS = {"CONFIG": ["GET", "maxmemory"], "DEBUG": ["SLEEP", "0"], "SHUTDOWN": ["NOSAVE"], "KEYS": ["*"]}


@check("redis-dangerous-commands")
def redis_dangerous_commands(rule: Rule, ctx: CheckContext) -> list[Result]:
    commands = [c.upper() for c in rule.param("commands")]

    def verdict(stack: Stack, handle: ServiceHandle) -> tuple[str | None, str]:
        allowed = []
        with _privileged_redis(stack, handle) as client:
            for command in commands:
                # ACL DRYRUN answers OK when the user may run it, an explanation when not.
                answer = client.execute_command("ACL", "DRYRUN", "default", command, *DRYRUN_ARGS.get(command, []))
                if (answer.decode() if isinstance(answer, bytes) else str(answer)) == "OK":
                    allowed.append(command)
        if allowed:
            return f"the application user may run {', '.join(allowed)}", ""
        return None, f"the application user is denied {', '.join(commands)}"

    return _each(rule, ctx, verdict)
