"""The ``ladderlab`` command: parse arguments, call the library, show progress.

No logic lives here. Errors the library raises on purpose print one clear
message and exit with their code (2 for bad input); nothing prints a traceback
unless ``LADDERLAB_DEBUG=1``.

What is printed is never interpreted: ids, paths, DIDs, feedback and learner
text go out verbatim. The consoles have rich's markup, emoji codes (``:key:``)
and highlighting off, and wrap nothing; colour is added only with
:class:`rich.text.Text` spans around our own words.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ladderlab import __version__
from ladderlab.config import Settings
from ladderlab.errors import LadderlabError, UsageError

if TYPE_CHECKING:
    from ladderlab.course.labs import LabDef
    from ladderlab.ladder.views import Selection


def _console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 1000  # piped: tables take their natural width, nothing is cut to fit 80 columns
    return console


err = _console(stderr=True)
out = _console()


def say(message: str) -> None:
    err.print(Text.assemble(("ladderlab:", "dim"), " ", message))


def _styled(word: str, style: str, rest: str = "") -> Text:
    """``word`` in ``style``, then ``rest`` as plain text (never markup)."""
    return Text.assemble((word, style), rest)


def _client(settings: Settings) -> Any:
    from ladderlab.environments.engine import connect

    return connect()


def _course_id(settings: Settings) -> str:
    from ladderlab.course import load_course

    return load_course(settings.course_file).id


def cmd_doctor(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.doctor import as_json, diagnose

    findings = diagnose(settings)
    if args.json:
        print(json.dumps({"ok": all(f.ok for f in findings), "checks": as_json(findings)}, indent=2))
    else:
        table = Table("check", "", "detail", "fix", show_lines=False)
        for f in findings:
            table.add_row(f.name, Text("ok", "green") if f.ok else Text("MISSING", "red"), f.detail,
                          "" if f.ok else f.fix)
        out.print(table)
    return 0 if all(f.ok for f in findings) else 1


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments import hostguard
    from ladderlab.environments.engine import ensure_engine
    from ladderlab.environments.images import build

    if args.remove_host_firewall:
        say("host firewall for lab networks: " + ("removed" if hostguard.remove() else "was not installed"))
        return 0
    client = ensure_engine(settings, say=say)
    hostguard.prepare(client, say)
    if not args.no_images:
        build(client, settings, args.envs or None, say)
    if args.browser:
        from ladderlab import browser

        say(f"chromium: {browser.ensure(settings, say)}")
    if args.hub:
        from ladderlab.hub import database, proxy

        say(f"hub proxy: {proxy.ensure(settings, say)}")
        say(f"hub database: {database.ensure(settings, say)}")
    say("ready")
    return 0


def cmd_images_build(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.images import build

    results = build(_client(settings), settings, args.envs or None, say, no_cache=args.no_cache)
    for ref, state in results:
        out.print(f"{ref.tag}\t{state}")
    return 0


def _fleet() -> Any:
    from ladderlab.environments import fleet

    found = fleet.get()
    if found is None:
        raise UsageError(f"no cluster: set {fleet.CLUSTER_VARIABLE} to a cluster file (see docs/cluster.md)")
    return found


def cmd_fleet_nodes(args: argparse.Namespace, settings: Settings) -> int:
    from dataclasses import asdict

    nodes = _fleet().nodes()
    if args.json:
        print(json.dumps([{**asdict(n), "usable": n.usable} for n in nodes], indent=2))
        return 0
    table = Table("node", "role", "state", "availability", "CPUs reserved", "MiB reserved", "environments",
                  "images")
    for n in nodes:
        table.add_row(n.name, n.role, Text(n.state, "green" if n.state == "ready" and n.answers else "red"),
                      n.availability, f"{n.reserved_cpus:g}/{n.cpus:g}",
                      f"{n.reserved_memory >> 20}/{n.memory >> 20}", str(len(n.environments)),
                      ", ".join(sorted(n.images)) or "-")
    out.print(table)
    return 0 if all(n.usable or n.availability != "active" for n in nodes) else 1


def cmd_fleet_push(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.runtime import check_images, image_set, load_spec

    fl = _fleet()
    client = _client(settings)
    for env in args.envs:
        spec = load_spec(settings, env)
        check_images(settings, client, spec)
        for node, what in fl.push(client, env, image_set(settings, client, spec), nodes=args.node, say=say).items():
            say(f"{env} on {node}: {what}")
    return 0


def cmd_fleet_forget(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.reaper import reap

    fl = _fleet()
    released = fl.forget(args.node)
    say(f"node {args.node} removed from the swarm; released {len(released)} environment(s) placed there"
        + (f": {', '.join(released)}" if released else ""))
    reap(settings, _client(settings))  # their records, now that nothing of them answers
    for name, why in fl.stuck.items():
        say(f"network {name} not removed: {why}")
    return 1 if fl.stuck else 0


def cmd_lab(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.labserver import run_author, run_workspace

    if args.author:
        return run_author(settings, args.port, say)
    return run_workspace(settings, args.port, say, workspace=Path(args.workspace) if args.workspace else None,
                         workers=args.workers, token=args.token)


def _show_submission(sub: Any) -> None:
    from ladderlab.service.handin import describe

    for line in describe(sub):
        out.print(line)


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.course.seeds import check_learner
    from ladderlab.lab import learner_id
    from ladderlab.service.handin import submit
    from ladderlab.service.paths import ServicePaths

    learner = check_learner(learner_id(args.learner))
    paths = ServicePaths.of(settings)
    notebook = Path(args.notebook) if args.notebook else paths.workspace / args.lab / f"{args.lab}.ipynb"

    def progress(sub: Any) -> None:
        say(f"{sub.lab}: {sub.status}{': ' + sub.stage if sub.stage else ''}")

    if args.no_wait:
        from ladderlab.service.handin import hand_in_lab

        key = hand_in_lab(settings, paths, args.lab, notebook, learner, say)
        print(json.dumps({"key": key}) if args.json else key)
        return 0
    sub = submit(settings, args.lab, notebook, learner, say=say, on_change=progress, timeout=args.timeout,
                 paths=paths)
    if args.json:
        print(json.dumps(sub.to_json(), indent=2))
    else:
        _show_submission(sub)
    return 4 if sub.status == "error" else 0


def _cohort_paths(settings: Settings) -> Any:
    from ladderlab.service.paths import ServicePaths

    return ServicePaths.of(settings)


def cmd_hub_passwords(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.hub import run as hub

    issued = hub.passwords(settings, args.cohort, Path(args.root), args.learner or None, args.trainer or None)
    say(f"{len(issued)} password(s) issued for cohort {args.cohort}; hand each to its owner: they are not kept"
        + (f" (trainers: {', '.join(args.trainer)}; their cohort view: /services/ladderlab/cohort)"
           if args.trainer else ""))
    for learner, password in sorted(issued.items()):
        print(f"{learner}\t{password}")  # tab-separated, for a script
    return 0


def cmd_hub_start(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.hub import run as hub
    from ladderlab.hub.database import GraderAccess

    if bool(args.graders_listen) != bool(args.graders_from):
        raise UsageError("--graders-listen and --graders-from go together: the address graders reach, and their "
                         "network")
    graders = GraderAccess(args.graders_listen, args.graders_from) if args.graders_listen else None
    return hub.start(settings, args.cohort, Path(args.root), args.port, say, graders=graders)


def cmd_hub_database(args: argparse.Namespace, settings: Settings) -> int:
    import shlex
    from pathlib import Path

    from ladderlab.hub.database import HubDatabase

    if os.geteuid() != 0:
        raise UsageError("the hub's PostgreSQL is root's and postgres's only: run this as root")
    root = Path(args.root).resolve()
    db = HubDatabase(root / "postgres")
    if not (db.data / "PG_VERSION").exists():
        raise UsageError(f"no hub database in {db.data}: `ladderlab hub start --root {root}` makes it")
    if args.grader_url:
        if not db.running():
            raise UsageError(f"the hub's PostgreSQL is not running ({db.data}): graders reach it while `ladderlab hub "
                             f"start --root {root} --graders-listen ...` runs")
        print(db.grader_url())
        return 0
    if args.stop:
        from ladderlab.hub.run import hub_lock

        fd = hub_lock(root)  # refused while the hub runs (its PostgreSQL stops with it); no hub starts meanwhile
        try:
            db.stop()
        finally:
            os.close(fd)
        say(f"the hub's PostgreSQL is stopped ({db.data})")
        return 0
    if args.start:
        db.start(say)
        say(f"the hub's PostgreSQL runs ({db.data}) until `ladderlab hub database --stop --root {root}` or the "
            f"next hub stops")
    elif not db.running():
        raise UsageError(f"the hub's PostgreSQL is not running ({db.data}): it runs while `ladderlab hub start "
                         f"--root {root}` does, or after `ladderlab hub database --start --root {root}`")
    for var, url in db.urls().items():
        print(f"export {var}={shlex.quote(url)}")
    return 0


def cmd_cohort_create(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.service import cohorts

    path = cohorts.create(_cohort_paths(settings), args.name)
    say(f"cohort {args.name} created ({path}); add learners with: ladderlab cohort add {args.name} --roster F.csv")
    return 0


def cmd_cohort_add(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.service import cohorts
    from ladderlab.service.handin import ensure_released

    paths = _cohort_paths(settings)
    cohorts.members(paths, args.name)  # the cohort exists
    rows = cohorts.read_roster(Path(args.roster))  # a bad roster is refused before anything is prepared
    ensure_released(settings, paths, say, skip_broken=True)  # nbgrader's course root and gradebook
    added, updated = cohorts.add(paths, args.name, rows)
    say(f"cohort {args.name}: {added} learner(s) added, {updated} updated (also in nbgrader's gradebook)")
    return 0


def cmd_cohort_release(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.service import cohorts
    from ladderlab.service.handin import ensure_released

    paths = _cohort_paths(settings)
    cohorts.members(paths, args.name)  # the cohort exists
    course = ensure_released(settings, paths, say, only=[args.lab])
    say(f"{args.lab} released to {paths.exchange / course.id / 'outbound' / args.lab} (nbgrader exchange); "
        f"learners fetch it from the Assignments panel")
    return 0


def cmd_cohort_collect(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.course import load_course
    from ladderlab.course.labs import chosen_labs
    from ladderlab.service import cohorts

    paths = _cohort_paths(settings)
    course = load_course(settings.course_file, "course.yaml")
    chosen_labs(course, [args.lab])
    rows = cohorts.collect(paths, course.id, [m.id for m in cohorts.members(paths, args.name)], args.lab)
    out.print(_table(["learner", "submission", "collected"], [[a, b or "-", c] for a, b, c in rows]))
    say(f"{sum(1 for r in rows if r[1])} of {len(rows)} learners have handed {args.lab} in")
    return 0


def cmd_cohort_grade(args: argparse.Namespace, settings: Settings) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from ladderlab.service import cohorts
    from ladderlab.service.queue import default_workers

    paths = _cohort_paths(settings)
    workers, why = default_workers()
    if args.jobs is not None:
        if args.jobs < 1:
            raise UsageError(f"--jobs {args.jobs}: at least 1")
        workers, why = args.jobs, f"{args.jobs} workers (--jobs)"
    say(why)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[detail]}"), console=err, transient=False) as bar:
        task = bar.add_task(f"grading {args.lab}", total=None, detail="")

        def progress(t: Any) -> None:
            eta = t.eta(time.monotonic())
            detail = (f"passed {t.passed}, not passed {t.graded - t.passed}, errors {t.errors}, remaining "
                      f"{t.remaining}" + (f", ETA {eta:.0f} s" if eta is not None else ""))
            bar.update(task, total=t.total, completed=t.done, detail=detail)

        subs = cohorts.grade(settings, paths, args.name, args.lab, workers=workers, say=say, progress=progress,
                             regrade=args.regrade)
    rows = [[s.student, s.status, "" if s.score is None else f"{s.score:g}/{s.max_score:g}",
             "" if s.passed is None else ("yes" if s.passed else "no"), s.error or "", s.log] for s in subs]
    out.print(_table(["learner", "status", "score", "passed", "error", "log"], rows))
    errors = sum(1 for s in subs if s.status == "error")
    say(f"{len(subs)} graded in {args.lab}: {sum(1 for s in subs if s.passed)} passed, {errors} could not be "
        f"graded; release feedback with: ladderlab cohort feedback {args.name} {args.lab}")
    return 4 if errors else 0


def cmd_cohort_feedback(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.service import cohorts

    done = cohorts.release_feedback(settings, _cohort_paths(settings), args.name, args.lab)
    say(f"feedback released to {len(done)} learner(s) for {args.lab} (hidden checks by title only)")
    return 0


def cmd_cohort_record_rubric(args: argparse.Namespace, settings: Settings) -> int:
    import getpass

    from ladderlab.service import cohorts

    grader = args.grader or os.environ.get("JUPYTERHUB_USER") or getpass.getuser()
    rows = cohorts.record_rubric(settings, _cohort_paths(settings), args.name, args.lab, grader)
    if args.json:
        print(json.dumps({"cohort": args.name, "lab": args.lab, "grader": grader,
                          "learners": [r.to_json() for r in rows]}, indent=2))
        return 0
    out.print(_table(["learner", "state", "points", "passed", "entry", "note"],
                     [[r.learner, r.state,
                       "" if r.evidence is None else f"{r.evidence.score:g}/{r.evidence.max_score:g}",
                       "" if r.evidence is None else ("yes" if r.evidence.passed else "no"),
                       "" if r.seq is None else str(r.seq), r.note] for r in rows]))
    say(f"{sum(1 for r in rows if r.state == 'recorded')} manual grade(s) of {args.lab} recorded (grader {grader})")
    return 0


def cmd_cohort_status(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.course import load_course
    from ladderlab.course.labs import chosen_labs
    from ladderlab.service import cohorts

    paths = _cohort_paths(settings)
    course = load_course(settings.course_file, "course.yaml")
    labs = chosen_labs(course, [args.lab] if args.lab else None)
    snapshot = cohorts.StatusReader(settings, paths, course, args.name, labs)
    learners = snapshot.learners

    def table(rows: list[Any], rates: dict[str, Any]) -> Table:
        t = _table(["learner", "lab", "state", "score", "passed", "note"],
                   [[r.learner, r.lab, r.state, "" if r.score is None else f"{r.score:g}/{r.max_score:g}",
                     "" if r.passed is None else ("yes" if r.passed else "no"), r.note] for r in rows])
        t.caption = "; ".join(f"{lab}: {v['passed']}/{v['learners']} passed"
                              + (f", {v['awaiting_rubric']} awaiting the manual rubric" if v["awaiting_rubric"] else "")
                              for lab, v in rates.items())
        return t

    if args.json:
        rows, rates = snapshot()
        print(json.dumps({"cohort": args.name, "learners": learners, "labs": labs,
                          "states": [r.to_json() for r in rows], "pass_rates": rates}, indent=2))
        return 0
    if not args.watch:
        out.print(table(*snapshot()))
        return 0
    from rich.live import Live

    with Live(table(*snapshot()), console=out, refresh_per_second=1) as live:
        while True:
            time.sleep(2)
            live.update(table(*snapshot()))


def cmd_service_run(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.service.handin import ensure_released
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.queue import GradingService, ServiceLock

    paths = ServicePaths.of(settings)
    ensure_released(settings, paths, say)
    lock = ServiceLock(paths.lock)
    if not lock.acquire():
        raise UsageError(f"a grading service already runs for {settings.cache_dir} (pid in {paths.lock})")
    service = GradingService(settings, paths, workers=args.workers, say=say).start()
    say(f"grading service running: {args.workers} worker(s), exchange {paths.exchange} (Ctrl-C to stop)")
    try:
        _until_interrupted()
    finally:
        service.stop(graceful=False)
        lock.release()


def _until_interrupted() -> NoReturn:
    """Sleep until Ctrl-C or SIGTERM (a service manager's stop), either of which unwinds the caller's ``finally``:
    a foreground service's main thread."""
    import signal

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    while True:
        time.sleep(3600)


def cmd_service_grader(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.grading.checks import one_line
    from ladderlab.service.judging import URL_ENV, Judge, JudgingTable, redacted

    url = args.database or os.environ.get(URL_ENV, "")
    if not url:
        raise UsageError(f"no judging database: give --database URL or set {URL_ENV} (on the hub: ladderlab hub "
                         f"database --grader-url)")
    if args.workers < 1:
        raise UsageError(f"--workers: expected 1 or more, got {args.workers}")
    table = JudgingTable(url)
    try:
        table.ping()
    except Exception as exc:
        raise LadderlabError(f"the judging database {redacted(url)} does not answer: {type(exc).__name__}: "
                             f"{one_line(str(exc))}") from None
    judge = Judge(settings, table, workers=args.workers, say=say).start()
    say(f"grader {judge.name}: {args.workers} worker(s), judging for {redacted(url)} (Ctrl-C to stop)")
    try:
        _until_interrupted()
    finally:
        judge.stop()
        table.close()
        say(f"grader {judge.name}: stopped after {judge.judged} judgement(s)")


def cmd_service_status(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.service.ledger import Ledger
    from ladderlab.service.paths import ServicePaths
    from ladderlab.service.queue import ServiceLock

    paths = ServicePaths.of(settings)
    running = ServiceLock.held(paths.lock)
    subs = Ledger(paths.ledger_db, readonly=True).all(args.learner) if paths.ledger_db.exists() else []
    if args.json:
        print(json.dumps({"running": running, "submissions": [s.to_json() for s in subs]}, indent=2))
        return 0
    say(f"grading service {'running' if running else 'not running'}")
    rows = [[s.student, s.lab, s.timestamp, s.status, "" if s.score is None else f"{s.score:g}/{s.max_score:g}",
             s.error or s.stage] for s in subs]
    out.print(_table(["learner", "lab", "handed in", "status", "score", "note"], rows))
    return 0


def cmd_course_check(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.course import load_course

    course = load_course(settings.course_file)
    out.print(f"{settings.course_file}: ok ({course.summary()})")
    return 0


def cmd_new_lab(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.course.scaffold import scaffold_lab
    from ladderlab.grading.checks import load_graders

    clauses = [c.strip() for c in (args.clauses or "").split(",") if c.strip()]
    made = scaffold_lab(settings, args.id, env=args.env, registry=load_graders(settings.root), title=args.title,
                        points=args.points, clauses=clauses, say=say)
    out.print(f"{made.lab_id}: {len(made.remaining)} places to fill (docs/authoring.md), each marked TODO(author):")
    for where, line in made.remaining:
        out.print(f"  {where}: {line}")
    return 0


def cmd_env_up(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.runtime import load_spec, up
    from ladderlab.environments.views import env_json, host_rows

    load_spec(settings, args.env)  # a bad env.yaml is reported before any engine is needed
    started = time.monotonic()
    course_id = args.course or _course_id(settings)
    env = up(settings, args.env, client=_client(settings), learner=args.learner, lab=args.lab or "",
             seed=args.seed, course_id=course_id, ttl_minutes=args.ttl, overrides=dict(args.param),
             reuse=not args.fresh, say=say)
    if args.json:
        print(json.dumps(env_json(env), indent=2))
        return 0
    say(f"up in {time.monotonic() - started:.2f}s")
    out.print(_styled(env.id, "bold", f"  ({env.record.env}, learner {env.record.learner})"))
    out.print(_table(["host", "role", "address", "container"], host_rows(env)))
    for k, v in env.params.items():
        out.print(f"  {k} = {v}")
    out.print(f"tear down with: ladderlab env down {env.id}")
    return 0


def cmd_env_down(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.runtime import down

    client = _client(settings)
    for env_id in args.ids:
        n = down(settings, env_id, client)
        say(f"{env_id}: removed {n} containers and networks" if n else f"{env_id}: nothing to remove")
    return 0


def cmd_env_ls(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.runtime import list_envs
    from ladderlab.environments.views import env_rows, envs_json

    envs = list_envs(settings, _client(settings))
    if args.json:
        print(json.dumps(envs_json(envs), indent=2))
        return 0
    out.print(_table(["id", "env", "lab", "learner", "status", "hosts", "expires in"], env_rows(envs), ids=(0, 3)))
    return 0


def cmd_env_reap(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.reaper import reap
    from ladderlab.environments.views import reap_json

    report = reap(settings, _client(settings), dry_run=args.dry_run)
    if args.json:
        print(json.dumps(reap_json(report, args.dry_run), indent=2))
        return 0
    verb = "would remove" if args.dry_run else "removed"
    for env_id, why in report.removed.items():
        say(f"{verb} {env_id} ({why})")
    from ladderlab.environments import fleet

    fl = fleet.get()
    for name, why in (fl.stuck if fl is not None else {}).items():
        say(f"network {name} not removed: {why}")
    say(f"{len(report.removed)} {verb}, {len(report.kept)} kept, {len(report.stale_records)} stale records")
    return 0


def cmd_env_sh(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.environments.runtime import attach

    env = attach(settings, args.id, _client(settings))
    host = env.host(args.host, transport=args.transport)
    result = host.run(" ".join(args.command), timeout=args.timeout)
    sys.stdout.write(result.stdout)
    sys.stderr.write(result.stderr)
    return int(result.rc)


def _labs(settings: Settings, ids: Sequence[str] | None) -> list[LabDef]:
    from ladderlab.course import load_course
    from ladderlab.course.labs import load_labs
    from ladderlab.grading.checks import load_graders

    course = load_course(settings.course_file, "course.yaml")
    return load_labs(settings, course, ids, registry=load_graders(settings.root))


def _table(header: Sequence[str], rows: Sequence[Sequence[str | Text]], ids: Sequence[int] = (0,)) -> Table:
    """A table whose ``ids`` columns are never shortened or wrapped (the other columns give way)."""
    table = Table()
    for i, name in enumerate(header):
        table.add_column(name, no_wrap=i in ids, overflow="fold" if i in ids else "ellipsis")
    for row in rows:
        table.add_row(*row)
    return table


def _name_value(text: str) -> tuple[str, str]:
    """``--param NAME=VALUE``."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name, value


def cmd_grade(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.course.labs import read_notebook, write_notebook
    from ladderlab.course.seeds import check_learner
    from ladderlab.grading.pipeline import grade

    lab = _labs(settings, [args.lab])[0]
    student = check_learner(args.student)
    submitted = read_notebook(Path(args.notebook), args.notebook)
    report, graded = grade(settings, _client(settings), lab, submitted, student, say=say)
    if args.output:
        write_notebook(Path(args.output), graded, f"--output {args.output}")
    for problem in report.problems:
        say(f"note: {problem}")
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        marks = {"passed": ("PASS", "green"), "failed": ("FAIL", "red"), "error": ("ERROR", "yellow")}
        for c in report.checks:  # feedback quotes learner state: plain text after our mark
            out.print(_styled(*marks[c.status], f" {c.id} {c.points:g}/{c.max_points:g}  {c.feedback}"))
        out.print(f"{report.lab} {report.student}: {report.score:g}/{report.max_score:g} "
                  f"({'passed' if report.passed else 'not passed'})")
    if not report.complete:
        say(f"grading incomplete (nothing was recorded; grade it again): {report.error}")
        return 4  # a grading error: the grader could not judge (2 is bad input, 3 no engine)
    return 0


def _seed_counts(given: list[str], labs: set[str]) -> tuple[int, dict[str, int]]:
    """``--seeds K`` (every lab) and ``--seeds LAB=K`` (one lab), repeatable: (the default K, K per lab)."""
    from ladderlab.errors import UsageError

    default, per_lab = 1, {}
    for item in given:
        lab, eq, k = item.rpartition("=")
        if not k.isdigit() or int(k) < 1 or (eq and not lab):
            raise UsageError(f"--seeds {item}: K must be a whole number, at least 1 (K or LAB=K)")
        if lab and lab not in labs:
            raise UsageError(f"--seeds {item}: {lab} is not among the labs tested ({', '.join(sorted(labs))})")
        if lab:
            per_lab[lab] = int(k)
        else:
            default = int(k)
    return default, per_lab


#: ``--decoys-once`` without a lab: every lab under test.
ALL_LABS = "*"


def _decoys_once(given: Iterable[str], labs: Sequence[str]) -> set[str]:
    """The labs whose decoys are graded for one learner: ``--decoys-once`` (every lab) or ``--decoys-once LAB``."""
    once = set(given)
    unknown = sorted(once - set(labs) - {ALL_LABS})
    if unknown:
        raise UsageError(f"--decoys-once {unknown[0]}: not one of the labs under test ({', '.join(labs)})")
    return set(labs) if ALL_LABS in once else once


def cmd_selftest(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.grading.selftest import selftest

    labs = _labs(settings, args.labs)
    if not labs:
        say("no published labs to test")
    seeds, seeds_for = _seed_counts(args.seeds or ["1"], {lab.id for lab in labs})
    decoys_once = _decoys_once(args.decoys_once or (), [lab.id for lab in labs])
    t0 = time.monotonic()
    results = selftest(settings, _client(settings), labs, jobs=args.jobs, seeds=seeds, seeds_for=seeds_for,
                       only=args.only or (), decoys_once=decoys_once, say=say)
    wall = time.monotonic() - t0
    if args.json:
        print(json.dumps({"labs": [r.to_json() for r in results], "wall_seconds": round(wall, 1)}, indent=2))
    else:
        for r in results:  # the cost: what a CI run of this self-test spends on it
            out.print(Text.assemble(f"{r.lab.id}: ", ("passed", "green") if r.passed else ("FAILED", "red"),
                                    f" ({len(r.runs)} gradings, {r.seconds:.0f} s of grading)"))
        say(f"self-test wall time {wall:.0f} s, {args.jobs} gradings at once")
    return 0 if all(r.passed for r in results) else 1


def cmd_env_connect(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.environments.runtime import attach
    from ladderlab.lab import live_connection

    env = attach(settings, args.id, _client(settings))
    conn = live_connection(settings, env, args.lab or env.record.lab)
    conn.write(Path(args.out))
    say(f"wrote {args.out} (0600): set LADDERLAB_CONNECT={args.out} in the kernel's environment")
    return 0


def cmd_nbgrader_init(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.grading.nbgrader_ext import init_course_root

    labs = _labs(settings, args.labs)
    root = init_course_root(settings, Path(args.dir), labs, force=args.force)
    say(f"course root ready at {root}: cd there and run `nbgrader generate_assignment <lab-id>`")
    return 0


def _selection(settings: Settings, args: argparse.Namespace) -> Selection:
    from ladderlab.ladder.views import select

    return select(settings, args.learner, args.cohort)


def cmd_ladder(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.ladder.views import ladder_json, ladder_rows

    view = _selection(settings, args)
    if args.json:
        print(json.dumps(ladder_json(view), indent=2))
        return 0
    out.print(_table(*ladder_rows(view)))
    return 0


def cmd_ladder_verify(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.ladder.store import Store
    from ladderlab.ladder.views import verification_json, verification_line

    result = Store.open(settings, args.url).verify()
    if args.json:
        print(json.dumps(verification_json(result)))
    else:
        out.print(Text(verification_line(result), style="" if result.ok else "red"))
    return 0 if result.ok else 1


def cmd_ladder_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.course import load_course
    from ladderlab.ladder.recording import rebuild_from_gradebook
    from ladderlab.ladder.store import Store

    course = load_course(settings.course_file, "course.yaml")
    root = Path(args.course_root)
    added = rebuild_from_gradebook(settings, course, root, Store.open(settings, args.url), args.db)
    say(f"{added} evidence entries added from {args.db or root / 'gradebook.db'}")
    return 0


def cmd_ladder_export(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.ladder.views import export_xapi

    path = Path(args.xapi)
    say(f"wrote {export_xapi(_selection(settings, args), path)} xAPI statements to {path}")
    return 0


def cmd_badges_issue(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.ladder.badges import issue
    from ladderlab.ladder.keys import load_or_create

    view = _selection(settings, args)
    issued = issue(view.course, view.ladder, load_or_create(settings), Path(args.out))
    for item in issued:
        say(f"{item.learner}: {item.track} level {item.level} -> {item.path}")
    say(f"{len(issued)} credentials issued" if issued else "no demonstrated levels: nothing to issue")
    return 0


def cmd_badges_verify(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.ladder.badges import BadgeError
    from ladderlab.ladder.views import check_credential, credential_line

    file = Path(args.file)
    try:
        credential = check_credential(settings, file, Path(args.issuer_key) if args.issuer_key else None)
    except BadgeError as exc:
        out.print(_styled("INVALID", "red", f" {file}: {exc}"))
        return 1
    out.print(_styled("VALID", "green", f" {credential_line(file, credential)}"))
    return 0


def cmd_badges_key(args: argparse.Namespace, settings: Settings) -> int:
    from ladderlab.ladder.badges import did_key
    from ladderlab.ladder.keys import load_or_create, public_pem

    key = load_or_create(settings)
    print(public_pem(key), end="")
    say(f"issuer: {did_key(key.public_key())}")
    return 0


def cmd_report(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from ladderlab.ladder.store import Store
    from ladderlab.ladder.views import select
    from ladderlab.reports.publish import publish

    started = time.monotonic()
    store = Store.open(settings)
    site = publish(select(settings, args.learner, args.cohort, store=store), store, Path(args.out))
    if not site.verification.ok:
        say(f"warning: the record does not verify ({site.verification.reason}); the report says so on every page")
    say(f"wrote {len(site.pages)} pages and CSV/JSON exports to {args.out} in {time.monotonic() - started:.2f}s "
        f"(open {site.index})")
    return 0


def _who(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The learner/cohort filter every ladder-reading command takes."""
    p.add_argument("--learner", metavar="ID")
    p.add_argument("--cohort", metavar="NAME", help="a cohort: `ladderlab cohort create` or course.yaml")
    return p


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ladderlab", description="Hands-on SRE skills lab.")
    p.add_argument("--version", action="version", version=f"ladderlab {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    d = sub.add_parser("doctor", help="check the engine, images and disk; say how to fix what is missing")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_doctor)

    s = sub.add_parser("setup", help="start a Docker engine if none answers (root+apt) and build images")
    s.add_argument("envs", nargs="*", metavar="ENV")
    s.add_argument("--no-images", action="store_true", help="only make sure an engine answers")
    s.add_argument("--remove-host-firewall", action="store_true",
                   help="remove the rules that keep lab networks off this host's addresses, then stop")
    s.add_argument("--browser", action="store_true", help="also make sure Debian's chromium is installed "
                                                          "(for the report's browser tests)")
    s.add_argument("--hub", action="store_true", help="also install the hub's proxy (configurable-http-proxy, "
                                                      "with npm) and PostgreSQL (Debian's postgresql)")
    s.set_defaults(func=cmd_setup)

    lb = sub.add_parser("lab", help="start JupyterLab on 127.0.0.1: your workspace and the grading service")
    lb.add_argument("--port", type=int, default=8888)
    lb.add_argument("--author", action="store_true",
                    help="open the course root itself with nbgrader's instructor tools (for lab authors)")
    lb.add_argument("--workspace", metavar="DIR", help="the workspace (default: $LADDERLAB_WORKSPACE or "
                                                       "<course>/workspace)")
    lb.add_argument("--workers", type=int, default=1, help="grading workers of the service (default 1)")
    lb.add_argument("--token", help="JupyterLab's access token (default: a random one, printed in its log)")
    lb.set_defaults(func=cmd_lab)

    c = sub.add_parser("course", help="course.yaml").add_subparsers(dest="sub", required=True, metavar="SUB")
    cc = c.add_parser("check", help="validate course.yaml")
    cc.set_defaults(func=cmd_course_check)

    nw = sub.add_parser("new", help="start new course content").add_subparsers(dest="sub", required=True,
                                                                             metavar="SUB")
    nl = nw.add_parser("lab", help="scaffold labs/ID/ (lab.yaml, notebook, decoy, solution, README) and its "
                                   "course.yaml entry")
    nl.add_argument("id", metavar="ID", help="<track code>-<level 1-6>-<slug>, e.g. sec-3-postgres-least-privilege")
    nl.add_argument("--env", required=True, metavar="ENV", help="an environment under environments/")
    nl.add_argument("--title", help="the lab's title (default: a TODO(author) to fill)")
    nl.add_argument("--points", type=int, default=10, metavar="N", help="the lab's points (default 10)")
    nl.add_argument("--clauses", metavar="ID,...", help="the ladder cell's clauses the lab shows (without it, "
                                                        "the error lists them)")
    nl.set_defaults(func=cmd_new_lab)

    i = sub.add_parser("images", help="lab images").add_subparsers(dest="sub", required=True, metavar="SUB")
    ib = i.add_parser("build", help="build the images of ENV (default: all), cached by content")
    ib.add_argument("envs", nargs="*", metavar="ENV")
    ib.add_argument("--no-cache", action="store_true", help="rebuild even if an image with the same content exists")
    ib.set_defaults(func=cmd_images_build)

    fl = sub.add_parser("fleet", help="cluster mode (LADDERLAB_CLUSTER): Swarm nodes and their images"
                        ).add_subparsers(dest="sub", required=True, metavar="SUB")
    fnd = fl.add_parser("nodes", help="every node: state, availability, capacity, reservations, images")
    fnd.add_argument("--json", action="store_true")
    fnd.set_defaults(func=cmd_fleet_nodes)
    fp = fl.add_parser("push", help="load ENV's images and the grading tools into the nodes (no registry needed)")
    fp.add_argument("envs", nargs="+", metavar="ENV")
    fp.add_argument("--node", action="append", default=None, help="only this node (repeatable)")
    fp.set_defaults(func=cmd_fleet_push)
    ff = fl.add_parser("forget", help="remove a node that is down for good from the swarm, and what "
                       "ladderlab had there (placements, overlay networks Swarm still holds for it)")
    ff.add_argument("node", metavar="NODE")
    ff.set_defaults(func=cmd_fleet_forget)

    e = sub.add_parser("env", help="disposable lab environments").add_subparsers(dest="sub", required=True,
                                                                                  metavar="SUB")
    eu = e.add_parser("up", help="bring up a fresh environment")
    eu.add_argument("env", metavar="ENV")
    eu.add_argument("--learner", default=os.environ.get("LADDERLAB_LEARNER", "local"))
    eu.add_argument("--lab", default="", help="lab id (part of the seed and the labels)")
    eu.add_argument("--seed", help="explicit seed instead of one derived from course, learner and lab")
    eu.add_argument("--course", help="course id for the seed (default: from course.yaml)")
    eu.add_argument("--ttl", type=float, help="minutes until the reaper may remove it")
    eu.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", type=_name_value,
                    help="fix a seeded parameter (lab authoring, debugging a learner's variant)")
    eu.add_argument("--fresh", action="store_true",
                    help="always start a new environment (default: reuse this learner's running one)")
    eu.add_argument("--json", action="store_true")
    eu.set_defaults(func=cmd_env_up)
    ed = e.add_parser("down", help="tear down environments (idempotent)")
    ed.add_argument("ids", nargs="+", metavar="ID")
    ed.set_defaults(func=cmd_env_down)
    el = e.add_parser("ls", help="list environments on the engine")
    el.add_argument("--json", action="store_true")
    el.set_defaults(func=cmd_env_ls)
    er = e.add_parser("reap", help="remove expired and orphaned environments")
    er.add_argument("--dry-run", action="store_true")
    er.add_argument("--json", action="store_true")
    er.set_defaults(func=cmd_env_reap)
    es = e.add_parser("sh", help="run a command on a host of an environment")
    es.add_argument("id", metavar="ID")
    es.add_argument("host", metavar="HOST")
    es.add_argument("command", nargs=argparse.REMAINDER, metavar="CMD")
    es.add_argument("--transport", choices=["docker", "ssh"], default="docker")
    es.add_argument("--timeout", type=float)
    es.set_defaults(func=cmd_env_sh)
    ec = e.add_parser("connect", help="write a connection file so a kernel without Docker access can use ID over SSH")
    ec.add_argument("id", metavar="ID")
    ec.add_argument("--out", required=True, help="file to write (mode 0600; it holds the environment's SSH key)")
    ec.add_argument("--lab", help="lab id (default: the environment's)")
    ec.set_defaults(func=cmd_env_connect)

    g = sub.add_parser("grade", help="grade one notebook against a fresh environment (records nothing)")
    g.add_argument("lab", metavar="LAB")
    g.add_argument("--notebook", required=True, metavar="PATH")
    g.add_argument("--student", required=True, metavar="ID")
    g.add_argument("--output", metavar="PATH", help="also write the graded notebook here")
    g.add_argument("--json", action="store_true", help="print the documented JSON report")
    g.set_defaults(func=cmd_grade)

    sm = sub.add_parser("submit", help="hand a lab's notebook in (nbgrader's exchange) and wait for its grading")
    sm.add_argument("lab", metavar="LAB")
    sm.add_argument("--notebook", metavar="PATH", help="default: the workspace's <LAB>/<LAB>.ipynb")
    sm.add_argument("--learner", metavar="ID", help="default: $LADDERLAB_LEARNER, the JupyterHub user or login")
    sm.add_argument("--timeout", type=float, default=1800, help="seconds to wait for the result (default 1800)")
    sm.add_argument("--json", action="store_true")
    sm.add_argument("--no-wait", action="store_true", help="hand in only (a trainer grades with `cohort grade`)")
    sm.set_defaults(func=cmd_submit)

    hb = sub.add_parser("hub", help="a cohort's JupyterHub on this machine (being built: docs/hub-design.md)")
    hbs = hb.add_subparsers(dest="sub", required=True, metavar="SUB")
    hp = hbs.add_parser("passwords", help="issue each learner of COHORT a password (printed once)")
    hp.add_argument("cohort", metavar="COHORT")
    hp.add_argument("--root", default="/srv/ladderlab", help="the hub's directory (default /srv/ladderlab)")
    hp.add_argument("--learner", action="append", metavar="ID", help="only these learners (repeatable)")
    hp.add_argument("--trainer", action="append", metavar="ID",
                    help="make ID one of the hub's trainers (the live cohort view) and issue their password; only "
                         "trainers' passwords are issued unless --learner is given too (repeatable)")
    hp.set_defaults(func=cmd_hub_passwords)
    hs = hbs.add_parser("start", help="run COHORT's hub in the foreground on 127.0.0.1")
    hs.add_argument("cohort", metavar="COHORT")
    hs.add_argument("--root", default="/srv/ladderlab", help="the hub's directory (default /srv/ladderlab)")
    hs.add_argument("--port", type=int, default=8000, help="the hub's port on 127.0.0.1 (default 8000)")
    hs.add_argument("--graders-listen", metavar="ADDR",
                    help="graders on other machines: the hub's PostgreSQL also listens on ADDR, a private address of "
                         "this machine (docs/hub-design.md 2.9)")
    hs.add_argument("--graders-from", metavar="CIDR", help="the grading machines' network (with --graders-listen)")
    hs.set_defaults(func=cmd_hub_start)
    hd = hbs.add_parser("database", help="print the shell lines that point commands at the hub's PostgreSQL "
                                         "(nbgrader's own; ladderlab's find it from the cache); --start/--stop it "
                                         "while no hub runs")
    hd.add_argument("--root", default="/srv/ladderlab", help="the hub's directory (default /srv/ladderlab)")
    hdx = hd.add_mutually_exclusive_group()
    hdx.add_argument("--start", action="store_true", help="start it without the hub (e.g. after the course)")
    hdx.add_argument("--stop", action="store_true", help="stop it (refused while the hub runs)")
    hdx.add_argument("--grader-url", action="store_true",
                     help="print the URL a grading machine's `ladderlab service grader` is given (it holds a "
                          "password)")
    hd.set_defaults(func=cmd_hub_database)

    co = sub.add_parser("cohort", help="a trainer's cohort over nbgrader: roster, release, collect, grade, feedback")
    cos = co.add_subparsers(dest="sub", required=True, metavar="SUB")
    cc_ = cos.add_parser("create", help="a new, empty cohort")
    cc_.add_argument("name", metavar="NAME")
    cc_.set_defaults(func=cmd_cohort_create)
    ca = cos.add_parser("add", help="add learners from a roster CSV (id,name,email,team); all rows or none")
    ca.add_argument("name", metavar="NAME")
    ca.add_argument("--roster", required=True, metavar="CSV")
    ca.set_defaults(func=cmd_cohort_add)
    for verb, fn, text in (("release", cmd_cohort_release, "release LAB through nbgrader's exchange"),
                           ("collect", cmd_cohort_collect, "take each learner's newest hand-in of LAB"),
                           ("feedback", cmd_cohort_feedback, "release nbgrader feedback for LAB")):
        cv = cos.add_parser(verb, help=text)
        cv.add_argument("name", metavar="NAME")
        cv.add_argument("lab", metavar="LAB")
        cv.set_defaults(func=fn)
    cg = cos.add_parser("grade", help="grade the collected hand-ins of LAB in parallel (resumable)")
    cg.add_argument("name", metavar="NAME")
    cg.add_argument("lab", metavar="LAB")
    cg.add_argument("--jobs", type=int, help="gradings at once (default: what the cores and memory allow)")
    cg.add_argument("--regrade", action="store_true", help="grade again what is graded (replaces its scores)")
    cg.set_defaults(func=cmd_cohort_grade)
    crr = cos.add_parser("record-rubric", help="record LAB's manual grades (its rubric cell, graded in the "
                                               "formgrader) in the ladder record; all or nothing")
    crr.add_argument("name", metavar="NAME")
    crr.add_argument("lab", metavar="LAB")
    crr.add_argument("--grader", metavar="ID", help="who graded, recorded with each grade (default: the JupyterHub "
                                                    "user, else the login name)")
    crr.add_argument("--json", action="store_true")
    crr.set_defaults(func=cmd_cohort_record_rubric)
    cst = cos.add_parser("status", help="per learner and lab: not submitted / submitted / grading / graded / error")
    cst.add_argument("name", metavar="NAME")
    cst.add_argument("--lab", metavar="LAB")
    cst.add_argument("--json", action="store_true")
    cst.add_argument("--watch", action="store_true", help="refresh every 2 s until Ctrl-C")
    cst.set_defaults(func=cmd_cohort_status)

    sv = sub.add_parser("service", help="the grading service").add_subparsers(dest="sub", required=True,
                                                                             metavar="SUB")
    svr = sv.add_parser("run", help="run the grading service without JupyterLab (Ctrl-C to stop)")
    svr.add_argument("--workers", type=int, default=1)
    svr.set_defaults(func=cmd_service_run)
    svg = sv.add_parser("grader", help="judge hand-ins for a hub on another machine: claim them from its "
                                       "PostgreSQL, grade them on this machine's engine (Ctrl-C to stop)")
    svg.add_argument("--database", metavar="URL",
                     help="the hub's judging database (`ladderlab hub database --grader-url` on the hub prints it; "
                          "default $LADDERLAB_JUDGING_URL, which keeps the password off the command line)")
    svg.add_argument("--workers", type=int, default=1, help="gradings at once (default 1)")
    svg.set_defaults(func=cmd_service_grader)
    svs = sv.add_parser("status", help="whether it runs, and every submission in the ledger")
    svs.add_argument("--learner", metavar="ID")
    svs.add_argument("--json", action="store_true")
    svs.set_defaults(func=cmd_service_status)

    st = sub.add_parser("selftest", help="prove each lab's checks discriminate (solution, untouched, decoys)")
    st.add_argument("labs", nargs="*", metavar="LAB", help="default: every published lab")
    st.add_argument("--json", action="store_true")
    st.add_argument("--jobs", type=int, default=3, help="gradings at once (default 3)")
    st.add_argument("--seeds", action="append", metavar="[LAB=]K",
                    help="grade solutions and decoys for K learners, covering the seeded choices (default 1); "
                         "LAB=K for one lab (repeatable)")
    st.add_argument("--decoys-once", action="append", nargs="?", const=ALL_LABS, metavar="LAB",
                    help="with several seeds: grade each decoy for one learner only (the first whose seed allows "
                         "it), in every lab or in LAB (repeatable); every learner's solutions are still graded")
    st.add_argument("--only", action="append", metavar="NAME",
                    help="grade only this run: notebook, untouched, or a solution's or decoy's name (repeatable)")
    st.set_defaults(func=cmd_selftest)

    nbg = sub.add_parser("nbgrader", help="nbgrader course root").add_subparsers(dest="sub", required=True,
                                                                                metavar="SUB")
    ni = nbg.add_parser("init", help="write nbgrader_config.py and source/<lab>/ for the published labs")
    ni.add_argument("dir", metavar="DIR")
    ni.add_argument("labs", nargs="*", metavar="LAB", help="default: every published lab")
    ni.add_argument("--force", action="store_true", help="overwrite an existing nbgrader_config.py")
    ni.set_defaults(func=cmd_nbgrader_init)

    ld = _who(sub.add_parser("ladder", help="levels per track per learner, from the evidence record"))
    ld.add_argument("--json", action="store_true")
    ld.set_defaults(func=cmd_ladder)
    lds = ld.add_subparsers(dest="sub", metavar="SUB")
    lv = lds.add_parser("verify", help="recompute the evidence chain; report the first broken entry")
    lv.add_argument("--url", help="SQLAlchemy URL (default: LADDERLAB_LADDER_URL or the SQLite file)")
    lv.add_argument("--json", action="store_true")
    lv.set_defaults(func=cmd_ladder_verify)
    lr = lds.add_parser("rebuild", help="append evidence from an nbgrader gradebook")
    lr.add_argument("--course-root", required=True, metavar="DIR", help="the nbgrader course root")
    lr.add_argument("--db", metavar="URL", help="gradebook URL (default: DIR/gradebook.db)")
    lr.add_argument("--url", help="ladder store URL")
    lr.set_defaults(func=cmd_ladder_rebuild)
    le = _who(lds.add_parser("export", help="xAPI statements (JSON lines) for every graded attempt"))
    le.add_argument("--xapi", required=True, metavar="FILE")
    le.set_defaults(func=cmd_ladder_export)

    b = sub.add_parser("badges", help="Open Badges 3.0 credentials").add_subparsers(dest="sub", required=True,
                                                                                  metavar="SUB")
    bi = _who(b.add_parser("issue", help="an OpenBadgeCredential (VC-JWT) per demonstrated ladder level"))
    bi.add_argument("--out", required=True, metavar="DIR")
    bi.set_defaults(func=cmd_badges_issue)
    bv = b.add_parser("verify", help="check a credential's signature, pinned issuer key, dates and structure")
    bv.add_argument("file", metavar="FILE")
    bv.add_argument("--issuer-key", metavar="KEY", help="the issuer's public key (PEM); default: this course's")
    bv.set_defaults(func=cmd_badges_verify)
    bk = b.add_parser("key", help="print the course's public key (PEM) and issuer did:key")
    bk.set_defaults(func=cmd_badges_key)

    rp = _who(sub.add_parser("report", help="the static site: cohort heatmap, engineer pages, CSV and JSON"))
    rp.add_argument("--out", required=True, metavar="DIR")
    rp.set_defaults(func=cmd_report)
    return p


def _hub_records(settings: Settings, func: Callable[..., int]) -> Any:
    """When ``hub start`` noted that this cache's records live in a hub's PostgreSQL: its database, and the
    variables that name it set for this command (unless already set); otherwise None. Not for the hub's own
    commands, which name their root."""
    from ladderlab.hub.database import DATABASES, remembered

    if func in (cmd_hub_start, cmd_hub_database) or all(os.environ.get(v) for v in DATABASES.values()):
        return None
    db = remembered(settings)
    if db is not None:
        for var, url in db.urls().items():
            os.environ.setdefault(var, url)
    return db


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    func: Callable[[argparse.Namespace, Settings], int] = args.func
    hub_db = None
    try:
        settings = Settings.from_env()
        hub_db = _hub_records(settings, func)
        return func(args, settings)
    except LadderlabError as exc:
        if os.environ.get("LADDERLAB_DEBUG") == "1":
            raise
        err.print(_styled("error:", "red", f" {exc}"))
        for note in getattr(exc, "__notes__", []):
            err.print(note)
        if hub_db is not None and not hub_db.running():
            err.print(_hub_down(hub_db))
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130
    except BrokenPipeError:  # the reader went away (`ladderlab ladder --json | head`): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes
        return 141
    except Exception as exc:
        if (hub_db is None or hub_db.running()
                or not type(exc).__module__.startswith(("sqlalchemy", "pg8000", "peewee", "psycopg2"))):
            raise
        err.print(_styled("error:", "red", f" {type(exc).__name__}: {str(exc)[:300]}"))
        err.print(_hub_down(hub_db))
        return 1


def _hub_down(db: Any) -> str:
    return (f"this cache's records are in the hub's PostgreSQL ({db.data}), which is not running: start the hub, or "
            f"`ladderlab hub database --start --root {db.base.parent}`")


if __name__ == "__main__":
    sys.exit(main())
