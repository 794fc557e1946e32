"""The ``stackcheck`` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from stackcheck import engine, images
from stackcheck.compliance import runner as compliance_runner
from stackcheck.compliance.model import Area, Outcome, Policy, Severity
from stackcheck.compliance.runner import CheckContext
from stackcheck.errors import StackcheckError, StackError
from stackcheck.stack import DEFAULT_STACK, RUN_LABEL, Stack, remove_runs
from stackcheck.target import HttpTarget


def _offline_default() -> bool:
    return os.environ.get("STACKCHECK_OFFLINE", "") not in ("", "0", "false", "no")


def cmd_engine_ensure(args: argparse.Namespace) -> int:
    info = engine.ensure_engine(install=not args.no_install)
    how = "started by stackcheck" if info.started_by_us else "already running"
    print(f"engine {info.version} (API {info.api_version}) at {info.host}: {how}")
    return 0


def cmd_images_build(args: argparse.Namespace) -> int:
    builder = images.ImageBuilder(engine.client(), offline=args.offline, progress=_say)
    started = time.monotonic()
    results = builder.build(only=args.only, force=args.force)
    built = sum(r.status is images.BuildStatus.BUILT for r in results)
    _say(f"{len(results)} images, {built} built, {len(results) - built} up to date, {time.monotonic() - started:.1f}s")
    return 0


def cmd_images_list(args: argparse.Namespace) -> int:
    rows = images.ImageBuilder(engine.client(), offline=args.offline).status()
    print(f"{'image':<16} {'state':<8} {'size':>9}  tag")
    for row in rows:
        size = f"{row.size_mb:.0f} MB" if row.size_mb is not None else "-"
        print(f"{row.name:<16} {'present' if row.present else 'MISSING':<8} {size:>9}  {row.tag}")
    missing = [r.name for r in rows if not r.present]
    if missing:
        print(f"\nmissing: {' '.join(missing)} -> stackcheck images build --offline --only {' --only '.join(missing)}")
    return 0


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack.from_file(args.stack, reap=False, progress=_say).start()
    _say(f"up in {stack.boot_seconds:.1f}s\n{stack.describe()}\nremove with: stackcheck down {stack.run_id}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    client = engine.client()
    if not args.run_id and not args.all:
        runs = sorted({c.labels[RUN_LABEL] for c in client.containers.list(all=True, filters={"label": RUN_LABEL})})
        if len(runs) != 1:
            raise StackError(
                f"{len(runs)} stackcheck runs are up ({', '.join(runs) or 'none'}); which one?",
                "name it: `stackcheck down RUN_ID`, or remove them all: `stackcheck down --all`",
            )
        args.run_id = runs[0]
    containers, networks = remove_runs(client, None if args.all else args.run_id)
    _say(f"removed {containers} containers and {networks} networks ({'all runs' if args.all else args.run_id})")
    return 0


def cmd_check_compliance(args: argparse.Namespace) -> int:
    policy = Policy.load(args.policy)
    fail_on = Severity(args.fail_on) if args.fail_on else policy.fail_on
    areas = [Area(a) for a in args.area] if args.area else None
    if args.target:
        results = compliance_runner.run(
            CheckContext(HttpTarget.external(args.target, args.target_ca), None, policy), areas
        )
    else:
        with Stack.from_file(args.stack, progress=_say) as stack:
            results = compliance_runner.run(CheckContext(stack.target(), stack, policy), areas)
    print(compliance_runner.table(results))
    breaches = policy.breaches(results, fail_on)
    counts = {o: sum(r.outcome is o for r in results) for o in Outcome}
    summary = ", ".join(f"{n} {o.value}" for o, n in counts.items() if n)
    _say(f"\n{len(results)} results: {summary}; {len(breaches)} at or above {fail_on.value}")
    for breach in breaches:
        _say(f"BREACH {breach.rule.id} ({breach.rule.severity.value}) {breach.subject}: {breach.evidence}")
    return 1 if breaches else 0


def _say(line: str) -> None:
    print(line, flush=True)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="stackcheck", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    eng = sub.add_parser("engine", help="the Docker engine").add_subparsers(dest="action", required=True)
    ensure = eng.add_parser("ensure", help="find a running engine, or install and start dockerd (root, Debian)")
    ensure.add_argument("--no-install", action="store_true", help="never install docker.io")
    ensure.set_defaults(func=cmd_engine_ensure)

    img = sub.add_parser("images", help="locally built images").add_subparsers(dest="action", required=True)
    build = img.add_parser("build", help="build missing or changed images")
    build.add_argument("--only", action="append", metavar="NAME", help="build only this image (and its parents)")
    build.add_argument("--force", action="store_true", help="rebuild even when up to date")
    build.set_defaults(func=cmd_images_build)
    listing = img.add_parser("list", help="show which images are present and which are missing")
    listing.set_defaults(func=cmd_images_list)
    for p in (build, listing):
        mode = p.add_mutually_exclusive_group()
        mode.add_argument(
            "--offline",
            dest="offline",
            action="store_true",
            default=_offline_default(),
            help="base on a local debootstrap image; no registry (default with STACKCHECK_OFFLINE=1)",
        )
        mode.add_argument("--online", dest="offline", action="store_false", help="base on debian:bookworm-slim")
    up = sub.add_parser("up", help="boot a stack and leave it running; prints endpoints and the credentials file")
    up.add_argument("--stack", default=str(DEFAULT_STACK), help="stack file (default: the reference stack)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove a stack started with `up` (and any leftovers with --all)")
    down.add_argument("run_id", nargs="?", help="the run id `up` printed")
    down.add_argument("--all", action="store_true", help="remove every stackcheck-labelled container and network")
    down.set_defaults(func=cmd_down)

    chk = sub.add_parser("check", help="run checks and print a table").add_subparsers(dest="action", required=True)
    comp = chk.add_parser("compliance", help="policy rules: headers, TLS, containers, rate limits, health, data stores")
    comp.add_argument("--stack", default=str(DEFAULT_STACK), help="stack file to boot (default: the reference stack)")
    comp.add_argument("--policy", default=None, help="policy file merged over policies/default.toml")
    comp.add_argument("--target", default=None, help="check a running deployment's URL instead (HTTP/TLS rules)")
    comp.add_argument("--target-ca", default=None, help="CA bundle for --target")
    comp.add_argument(
        "--fail-on", choices=[s.value for s in Severity], help="severity threshold (default: the policy's)"
    )
    comp.add_argument("--area", action="append", choices=[a.value for a in Area], help="only these areas")
    comp.set_defaults(func=cmd_check_compliance)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return int(args.func(args))
    except StackcheckError as exc:
        print(f"stackcheck: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stackcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
