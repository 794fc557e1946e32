"""The ``stackcheck`` command: a thin shell over the library."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from stackcheck import engine, images, interrupt, resources, stackfile
from stackcheck.compliance import runner as compliance_runner
from stackcheck.compliance.model import Area, Outcome, Severity
from stackcheck.compliance.runner import CheckContext
from stackcheck.errors import StackcheckError, StackError
from stackcheck.results import REPORTS_DIR, latest_run, load_results, new_run_id
from stackcheck.results import table as results_table
from stackcheck.stack import DEFAULT_STACK, KEPT_LABEL, RUN_LABEL, Stack, remove_runs
from stackcheck.target import HttpTarget


def _mode_options(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    help_auto = "default: STACKCHECK_OFFLINE, else the mode remembered for this engine, else what works here"
    mode.add_argument(
        "--offline", dest="offline", action="store_true", default=None,
        help=f"base on a local debootstrap image; no registry ({help_auto})",
    )  # fmt: skip
    mode.add_argument("--online", dest="offline", action="store_false", help="base on debian:bookworm-slim")


def cmd_engine_ensure(args: argparse.Namespace) -> int:
    info = engine.ensure_engine(install=not args.no_install)
    how = "started by stackcheck" if info.started_by_us else "already running"
    print(f"engine {info.version} (API {info.api_version}) at {info.host}: {how}")
    return 0


def _catalog(stack: str | None) -> images.Catalog:
    """The image catalog, with a stack's own images when a stack file is named."""
    catalog = images.Catalog.load()
    return catalog.for_stack(stackfile.load(stack)) if stack else catalog


def _build_needed(stack: str, offline: bool | None) -> None:
    """The images the stack boots from, its own included, built where missing or changed."""
    catalog = _catalog(stack)
    images.ImageBuilder(engine.client(), catalog, offline=offline).build(only=catalog.needed(stackfile.load(stack)))


def cmd_images_build(args: argparse.Namespace) -> int:
    catalog = _catalog(args.stack)
    builder = images.ImageBuilder(engine.client(), catalog, offline=args.offline)
    started = time.monotonic()
    only = args.only or (catalog.needed(stackfile.load(args.stack)) if args.stack else None)
    results = builder.build(only=only, force=args.force)
    built = sum(r.status is images.BuildStatus.BUILT for r in results)
    _say(f"{len(results)} images, {built} built, {len(results) - built} up to date, {time.monotonic() - started:.1f}s")
    return 0


def cmd_images_list(args: argparse.Namespace) -> int:
    rows = images.ImageBuilder(engine.client(), _catalog(args.stack), offline=args.offline).status()
    print(f"{'image':<16} {'state':<8} {'size':>9}  tag")
    for row in rows:
        size = f"{row.size_mb:.0f} MB" if row.size_mb is not None else "-"
        print(f"{row.name:<16} {'present' if row.present else 'MISSING':<8} {size:>9}  {row.tag}")
    missing = [r.name for r in rows if not r.present]
    if missing:
        stack = f" --stack {args.stack}" if args.stack else ""
        print(f"\nmissing: {' '.join(missing)} -> stackcheck images build{stack} --only {' --only '.join(missing)}")
    return 0


@contextlib.contextmanager
def _booted(path: str) -> Iterator[Stack]:
    """A stack for one command, removed at the end (also on SIGTERM); says which run it is."""
    stack = Stack.from_file(path)
    _say(f"booting {stack.spec.name} (run {stack.run_id})")
    with stack:
        _say(f"up in {stack.boot_seconds:.1f}s")
        yield stack


def cmd_up(args: argparse.Namespace) -> int:
    stack = Stack.from_file(args.stack, reap=False)
    # Kept after this process exits; a SIGTERM while it boots still removes it (Stack.start).
    _say(f"booting {stack.spec.name} (run {stack.run_id})")
    stack.start()
    _say(f"up in {stack.boot_seconds:.1f}s\n{stack.describe()}\nremove with: stackcheck down {stack.run_id}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    client = engine.client()
    if not args.run_id and not args.all:
        # Only stacks kept on purpose: a test session's stack (reaped when it ends) is never guessed.
        kept = client.containers.list(all=True, filters={"label": f"{KEPT_LABEL}=true"})
        runs = sorted({c.labels[RUN_LABEL] for c in kept})
        if len(runs) != 1:
            raise StackError(
                f"{len(runs)} stacks kept by `stackcheck up` are running ({', '.join(runs) or 'none'}); which one?",
                "name it: `stackcheck down RUN_ID`, or remove every stackcheck stack: `stackcheck down --all`",
            )
        args.run_id = runs[0]
    removed = remove_runs(client, None if args.all else args.run_id)
    _say(
        f"removed {removed.containers} containers, {removed.networks} networks and {removed.volumes} volumes"
        f" ({'all runs' if args.all else args.run_id})"
    )
    return 0


def cmd_check_compliance(args: argparse.Namespace) -> int:
    # The stack file gives the policy (and [disabled]) when booted, or with --target when named.
    external = HttpTarget.external(args.target, args.target_ca, args.target_http_url) if args.target else None
    path = args.stack or (None if external else str(DEFAULT_STACK))
    spec = stackfile.load(Path(path)) if path else None
    policy = compliance_runner.scoped_policy(spec, args.policy, external)
    fail_on = Severity(args.fail_on) if args.fail_on else policy.fail_on
    areas = [Area(a) for a in args.area] if args.area else None
    _say(f"policy: {' < '.join(str(p) for p in policy.source)}")
    if external is not None:
        results = compliance_runner.run(CheckContext(external, None, policy), areas)
    else:
        with _booted(str(path)) as stack:
            target = stack.target() if stack.spec.entrypoint_url else None  # none: container rules only
            results = compliance_runner.run(CheckContext(target, stack, policy), areas)
    print(compliance_runner.table(results))
    breaches, warnings = policy.breaches(results, fail_on), policy.warnings(results, fail_on)
    counts = {o: sum(r.outcome is o for r in results) for o in Outcome}
    summary = ", ".join(f"{n} {o.value.replace('_', ' ')}" for o, n in counts.items() if n)
    _say(
        f"\n{len(results)} results: {summary}; {len(breaches)} at or above {fail_on.value}, "
        f"{len(warnings)} warning{'s' if len(warnings) != 1 else ''} below it"
    )
    for label, found in (("BREACH", breaches), ("WARNING", warnings)):
        for r in found:
            word = " NOT EVALUATED" if r.outcome is Outcome.NOT_EVALUATED else ""
            _say(f"{label}{word} {r.rule.id} ({r.rule.severity.value}) {r.subject}: {r.evidence}")
    return 1 if breaches else 0


GATE_AREAS = ("compliance", "load", "chaos")  # each a product suite and its pytest marker


def _pytest_child(paths: Sequence[Path | str], run_dir: Path, stack: str) -> list[str]:
    """pytest on the installed product suites, with stackcheck's own configuration wherever it runs."""
    ini = resources.package_dir("stackcheck.suites") / "gate.ini"
    return [
        sys.executable, "-m", "pytest", *map(str, paths), "-c", str(ini),
        "--rootdir", str(Path.cwd()), "--stack", str(Path(stack).resolve()), "--report-dir", str(run_dir),
        "--junitxml", str(run_dir / "junit.xml"), "-p", "stackcheck.interrupt", "-q", "-rfE",
    ]  # fmt: skip


def cmd_gate(args: argparse.Namespace) -> int:
    phases: list[tuple[str, float]] = []

    def phase(name: str, started: float) -> None:
        phases.append((name, time.monotonic() - started))
        _say(f"== {name}: {phases[-1][1]:.1f}s")

    started = time.monotonic()
    engine.ensure_engine()
    phase("engine", started)
    started = time.monotonic()
    _build_needed(args.stack, args.offline)
    phase("images", started)
    run_dir = (Path(REPORTS_DIR) / new_run_id()).resolve()
    areas = args.area or list(GATE_AREAS)
    markers = f"({' or '.join(areas)})" + (" and not slow" if args.profile == "smoke" else "")
    suites = resources.product_suites()
    pytest_args = [*_pytest_child([suites[a] for a in areas], run_dir, args.stack), "-m", markers]
    if args.policy:
        pytest_args += ["--policy", str(Path(args.policy).resolve())]
    if args.fail_on:
        pytest_args += ["--fail-on", args.fail_on]
    if args.workers > 1:  # one session stack for all workers; measurements run alone (fixtures/sharing.py)
        pytest_args += ["-n", str(args.workers), "--dist", "loadgroup"]
    started = time.monotonic()
    code = interrupt.run_child(pytest_args, Path.cwd())
    phase("suites", started)
    data = load_results(run_dir / "results.json")
    _say(f"\nstackcheck gate ({args.profile}) on {args.stack}: {data['verdict'].upper()}\n{results_table(data)}")
    for breach in data["breaches"][:20]:
        _say(f"BREACH [{breach['severity']}] {breach['area']} {breach['check']}: {breach['message'][:200]}")
    timings = ", ".join(f"{n} {s:.1f}s" for n, s in phases)
    _say(f"\nphases: {timings}; total {sum(s for _, s in phases):.1f}s\nreport: {run_dir}")
    if code not in (0, 1):  # interrupted, internal error, usage error: say so, whatever the results
        return code
    return 1 if data["verdict"] == "fail" else code


def cmd_report(args: argparse.Namespace) -> int:
    # Imported here: matplotlib is slow to import and only the report needs it.
    from stackcheck.report import render

    reports = Path(args.reports_dir)
    run_dir = reports / args.run_id if args.run_id else latest_run(reports)
    for path in render(run_dir):
        print(path)
    return 0


def cmd_drill(args: argparse.Namespace) -> int:
    from stackcheck.load.history import History
    from stackcheck.report.drill import render_drill

    chaos = stackfile.load(args.stack).chaos
    scenario = chaos.drillable(args.scenario)
    if scenario is None:
        names = [*chaos.drills(), *chaos.scenarios]
        raise StackcheckError(
            f"{args.stack} declares no drill or scenario {args.scenario!r}",
            f"drill one of: {', '.join(names)}" if names else "add a [scenarios.NAME] table to the stack file",
        )
    engine.ensure_engine()  # as the gate does: a drill on a fresh machine needs no setup step first
    _build_needed(args.stack, args.offline)
    run_dir = (Path(REPORTS_DIR) / f"{new_run_id()}-drill-{args.scenario}").resolve()
    test = resources.product_suites()["chaos"] / "test_scenarios.py"
    pytest_args = _pytest_child([f"{test}::test_scenario[{scenario.name}]"], run_dir, args.stack)
    _say(f"drill {args.scenario}: {' '.join(pytest_args[1:])}")
    code = interrupt.run_child(pytest_args, Path.cwd())
    history = None if args.no_history else History(args.history_url)
    html, markdown, met = render_drill(run_dir, scenario.name, args.operator, history, drill=args.scenario)
    _say(f"\ndrill {args.scenario}: {'objectives met' if met else 'OBJECTIVE BREACHED'}")
    _say(f"record: {html}\n        {markdown}")
    if code not in (0, 1):  # interrupted or internal error: say so, whatever the record holds
        return code
    return 0 if met else 1


def cmd_sign_off(args: argparse.Namespace) -> int:
    from stackcheck.load.history import History, SignOff
    from stackcheck.report.common import wall_clock
    from stackcheck.report.drill import accepted_text, render_signed

    history = History(args.history_url)
    sign = SignOff(
        reviewer=args.reviewer, accepted=args.verdict != "reject", at=wall_clock(time.time()), note=args.note,
        breach_accepted=args.accept_breach, operator=args.operator,
    )  # fmt: skip
    record = history.sign_off(args.run_id, sign)
    _say(f"drill run {record.run_id}: signed off by {record.reviewer} at {record.signed_off_at}, "
         f"accepted: {accepted_text(record)}")  # fmt: skip
    run_dir = (Path(args.reports_dir) / record.run_id).resolve()
    if (run_dir / "results.json").is_file():
        html, markdown = render_signed(run_dir, record, history)
        _say(f"record: {html}\n        {markdown}")
    else:
        _say(f"no record folder {run_dir}: the sign-off is in the history only (--reports-dir to name the folder)")
    return 0


def cmd_load_run(args: argparse.Namespace) -> int:
    # Imported here: the load package pulls in hdrh, which other commands do not need.
    from stackcheck.load import History, LoadRun, Mode, breach_table, profiles
    from stackcheck.load.regression import Verdict

    profile = profiles.get(args.profile)
    if args.time_scale is not None:
        profile = profile.scaled(args.time_scale)
    if args.duration is not None:
        profile = profile.with_duration(args.duration)
    options: dict[str, Any] = {
        "mode": Mode(args.mode),
        "max_inflight": args.max_inflight,
        "abort_after_s": args.abort_after,
        "history": None if args.no_history else History(args.history_url),
        "update_baseline": args.update_baseline,
        "master_bind": args.master_bind,
        "external_workers": args.external_workers,
    }
    if args.workers is not None:
        options["workers"] = args.workers
    if args.target:
        mix = stackfile.load(args.stack).load_mix  # the mix is the stack file's, wherever it is deployed
        run = LoadRun(HttpTarget.external(args.target, args.target_ca), profile, token=args.token, mix=mix, **options)
        report = run.run()
    else:
        with _booted(args.stack) as stack:
            run = LoadRun.for_stack(stack, profile, **options)
            report = run.run()
    total = report.total
    pct = "  ".join(f"{k} {v:.2f}" for k, v in total.percentiles_ms.items())
    _say(f"{total.count} requests, {total.rps:.1f} rps, {pct}  max {total.max_ms:.2f} ms (exact)")
    _say(f"errors: {total.errors} {total.errors_by_kind or ''}")
    if report.open_loop:
        ol = report.open_loop
        _say(f"open loop: {ol.scheduled} scheduled, {ol.unsent} unsent, {ol.late} late (max {ol.max_late_ms:.1f} ms)")
    _say(breach_table(report.breaches))
    if report.aborted:
        _say(report.aborted)
    if report.regression:
        _say(report.regression.line())
    _say(f"results: {run.out_dir}")
    regressed = report.regression is not None and report.regression.verdict is Verdict.REGRESSED
    return 1 if not report.passed or regressed else 0


def cmd_init(args: argparse.Namespace) -> int:
    # Imported here: only `init` reads YAML.
    from stackcheck import compose, stackfile
    from stackcheck.errors import StackFileError

    source = Path(args.from_compose) if args.from_compose else None
    out = Path(args.out) if args.out else (source.parent if source else Path("."))
    if source:
        translation = compose.translate(source, compose.parse_image_map(args.image_map or []), out)
    else:
        translation = compose.starter(out)
    stack, policy = compose.write(translation, out, force=args.force)
    for item in translation.untranslated:
        _say(f"not translated: {item.line()}")
    untranslated = f"; {len(translation.untranslated)} compose keys not translated (listed above)" if source else ""
    _say(f"wrote {stack} and {policy}{untranslated}")
    try:
        stackfile.load(stack)
    except StackFileError as exc:
        _say(f"{stack} does not load yet: {exc}")
        return 1
    _say(f"next: review the `# check:` lines of {stack}, then `stackcheck gate --stack {stack}`")
    return 0


def _say(line: str) -> None:
    print(line, flush=True)


def _stack_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--stack", default=str(DEFAULT_STACK), help="stack file to boot (default: the reference stack)")


def _target_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--target", default=None, help=f"{what} a running deployment's URL instead of booting a stack")
    p.add_argument("--target-ca", default=None, help="CA bundle for --target")


def _policy_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--policy", default=None, help="policy file merged over policies/default.toml")
    p.add_argument("--fail-on", choices=[s.value for s in Severity], help="severity threshold (default: the policy's)")


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
        p.add_argument("--stack", default=None, help="also the images this stack file builds itself ([images.NAME])")
        _mode_options(p)
    up = sub.add_parser("up", help="boot a stack and leave it running; prints endpoints and the credentials file")
    _stack_option(up)
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="remove a stack started with `up` (and any leftovers with --all)")
    down.add_argument("run_id", nargs="?", help="the run id `up` printed")
    down.add_argument("--all", action="store_true", help="remove every stackcheck-labelled container and network")
    down.set_defaults(func=cmd_down)

    chk = sub.add_parser("check", help="run checks and print a table").add_subparsers(dest="action", required=True)
    comp = chk.add_parser("compliance", help="policy rules: headers, TLS, containers, rate limits, health, data stores")
    comp.add_argument(
        "--stack", default=None, help="stack file to boot (default: the reference stack); with --target, its policy"
    )
    _target_options(comp, "check (HTTP/TLS rules, rate limits, liveness)")
    comp.add_argument(
        "--target-http-url", default=None, help="plain-HTTP URL of --target for the redirect rule (default: port 80)"
    )
    _policy_options(comp)
    comp.add_argument("--area", action="append", choices=[a.value for a in Area], help="only these areas")
    comp.set_defaults(func=cmd_check_compliance)

    ld = sub.add_parser("load", help="load runs against objectives").add_subparsers(dest="action", required=True)
    lrun = ld.add_parser("run", help="run a load profile (Locust, in subprocesses) and judge it")
    _stack_option(lrun)
    _target_options(lrun, "load (no objectives)")
    lrun.add_argument("--token", default=None, help="X-Stackcheck-Load token for --target")
    lrun.add_argument("--profile", default="smoke", help="smoke (default), steady, stages or spike")
    lrun.add_argument("--duration", type=float, default=None, help="stretch or shrink the profile to this many seconds")
    lrun.add_argument("--time-scale", type=float, default=None, help="multiply the profile's durations")
    lrun.add_argument("--workers", type=int, default=None, help="local Locust worker processes (default: cores / 2)")
    lrun.add_argument("--mode", choices=["closed", "open"], default="closed", help="closed: users; open: arrival rate")
    lrun.add_argument("--max-inflight", type=int, default=None, help="open loop: concurrent senders in total")
    lrun.add_argument("--abort-after", type=int, default=10, help="abort on a breach this many seconds long (0: never)")
    lrun.add_argument("--history-url", default=None, help="postgresql://... (default: reports/history.sqlite)")
    lrun.add_argument("--no-history", action="store_true", help="record nothing, compare with nothing")
    lrun.add_argument("--update-baseline", action="store_true", help="accept this run as the new baseline")
    lrun.add_argument("--master-bind", default="127.0.0.1", help="Locust master address (0.0.0.0 for remote workers)")
    lrun.add_argument("--external-workers", type=int, default=0, help="also wait for this many remote workers")
    lrun.set_defaults(func=cmd_load_run)

    gate = sub.add_parser(
        "gate", help="the release gate: images, stack, compliance, load smoke, chaos, report; exit 1 on any breach"
    )
    _stack_option(gate)
    _policy_options(gate)
    gate.add_argument(
        "--profile", choices=["smoke", "full"], default="smoke", help="smoke: minutes; full: every scenario"
    )
    gate.add_argument("--area", action="append", choices=list(GATE_AREAS), help="only these areas (default: all)")
    gate.add_argument(
        "--workers", type=int, default=1, help="pytest-xdist worker processes for the suites (default 1: serial)"
    )
    _mode_options(gate)
    gate.set_defaults(func=cmd_gate)

    report = sub.add_parser("report", help="render a run's report again from its results.json; prints the paths")
    which = report.add_mutually_exclusive_group()
    which.add_argument("run_id", nargs="?", help="the run under --reports-dir (default: the latest run)")
    which.add_argument("--latest", action="store_true", help="the most recent run (the default)")
    report.add_argument("--reports-dir", default=REPORTS_DIR, help="where runs are (default: reports/)")
    report.set_defaults(func=cmd_report)

    drill = sub.add_parser("drill", help="run one chaos scenario as a DR drill and write its record (drill.html/.md)")
    drill.add_argument(
        "scenario", help="the drill (a scenario's drill = NAME, e.g. q1) or a [scenarios.NAME] of the stack file"
    )
    _stack_option(drill)
    drill.add_argument("--operator", default=None, help="who runs the drill (left blank in the record otherwise)")
    drill.add_argument("--history-url", default=None, help="postgresql://... (default: reports/history.sqlite)")
    drill.add_argument("--no-history", action="store_true", help="record nothing, show no earlier drills")
    _mode_options(drill)
    drill.set_defaults(func=cmd_drill)
    sign = sub.add_parser(
        "sign-off", help="a reviewer's verdict on a drill run: stored in the history, written into its record"
    )
    sign.add_argument("run_id", help="the drill run (the folder `stackcheck drill` wrote, under reports/)")
    sign.add_argument("--reviewer", required=True, help="who reviewed the drill record")
    verdict = sign.add_mutually_exclusive_group(required=True)
    verdict.add_argument("--accept", dest="verdict", action="store_const", const="accept", help="outcome accepted")
    verdict.add_argument("--reject", dest="verdict", action="store_const", const="reject", help="outcome rejected")
    verdict.add_argument(
        "--accept-breach", metavar="REASON", default=None,
        help="accept a drill that breached its objectives, for this reason (--accept refuses a breached drill)",
    )  # fmt: skip
    sign.add_argument("--note", default=None, help="the reviewer's note, shown with the sign-off")
    sign.add_argument("--operator", default=None, help="who ran the drill, when the record has none")
    sign.add_argument("--history-url", default=None, help="postgresql://... (default: reports/history.sqlite)")
    sign.add_argument("--reports-dir", default=REPORTS_DIR, help="where the drill's folder is (default: reports/)")
    sign.set_defaults(func=cmd_sign_off)
    init = sub.add_parser("init", help="write a starter stack file and policy (from a docker-compose file or none)")
    init.add_argument("--from-compose", metavar="FILE", help="translate this docker-compose file")
    init.add_argument(
        "--out", metavar="DIR", help="folder for stack.toml and policy.toml (default: the compose file's)"
    )
    init.add_argument(
        "--image-map", action="append", metavar="COMPOSE_IMAGE=STACKCHECK_IMAGE",
        help="use this catalog image (or image reference) for a compose image, e.g. postgres:16=postgres",
    )  # fmt: skip
    init.add_argument("--force", action="store_true", help="overwrite existing stack.toml and policy.toml")
    init.set_defaults(func=cmd_init)
    return top


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # Progress of image builds and boots is logged (loggers stackcheck.*): shown here as plain lines.
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    logging.getLogger("stackcheck").setLevel(logging.INFO)
    interrupt.raise_on_termination()
    try:
        return int(args.func(args))
    except StackcheckError as exc:
        print(f"stackcheck: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # Ctrl-C, SIGTERM, SIGHUP: every stack has been removed on the way here
        print(f"stackcheck: interrupted ({exc or 'SIGINT'})", file=sys.stderr)
        return interrupt.exit_code(exc)


if __name__ == "__main__":
    sys.exit(main())
