"""``ladderlab hub``: a cohort's JupyterHub on this machine (docs/hub-design.md, 1).

``ladderlab hub passwords COHORT`` issues each learner a password (printed once, kept only as a hash);
``ladderlab hub start COHORT`` checks what the hub needs, writes its configuration into ``<root>/private`` and
runs JupyterHub in the foreground on 127.0.0.1 until it is stopped (SIGINT or SIGTERM stops the hub, which stops
the learners' servers). Every learner's server runs as their own ``ll-<id>`` account in the jail.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError, UsageError
from ladderlab.hub import accounts, auth, database, proxy
from ladderlab.hub.config import HubPlan, prepare

#: Tests only: a hub service token with admin rights over users and servers (never set it on a real hub).
TEST_TOKEN_ENV = "LADDERLAB_HUB_TEST_TOKEN"  # noqa: S105 - the name of a variable, not a secret


def roster(settings: Settings, cohort: str) -> list[str]:
    """The cohort's learner ids, each checked usable as an account (all bad ids named at once)."""
    from ladderlab.service import cohorts
    from ladderlab.service.paths import ServicePaths

    members = [m.id for m in cohorts.members(ServicePaths.of(settings), cohort)]
    if not members:
        raise UsageError(f"cohort {cohort!r} has no learners: ladderlab cohort add {cohort} --roster F.csv")
    bad = []
    for learner in members:
        try:
            accounts.account_name(learner)
        except UsageError:
            bad.append(learner)
    if bad:
        raise UsageError(f"cohort {cohort!r}: these learner ids cannot be hub accounts (lower-case letters, digits "
                         f"and '-', starting with a letter, at most 30 characters): {', '.join(bad)}")
    return members


def trainers(root: Path) -> list[str]:
    """The hub's trainers (``<root>/private/trainers.json``), as ``ladderlab hub passwords --trainer`` added them."""
    path = root / "private" / "trainers.json"
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise UsageError(f"{path}: not JSON ({exc}); it is a list of trainer ids") from None
    if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
        raise UsageError(f"{path}: expected a list of trainer ids")
    return data


def passwords(settings: Settings, cohort: str, root: Path, only: list[str] | None = None,
              new_trainers: list[str] | None = None) -> dict[str, str]:
    """New passwords for the cohort's learners (``only``: for these of them; none when only trainers are named);
    the others keep theirs. ``new_trainers`` become the hub's trainers (kept in ``private/trainers.json``) and get a
    password too: a trainer is not a learner of the cohort, and a learner cannot be made one."""
    members = roster(settings, cohort)
    unknown = sorted(set(only or []) - set(members))
    if unknown:
        raise UsageError(f"not in cohort {cohort!r}: {', '.join(unknown)}")
    for trainer in new_trainers or []:
        accounts.account_name(trainer)  # UsageError naming a bad id
    both = sorted(set(new_trainers or []) & set(members))
    if both:
        raise UsageError(f"a learner of {cohort!r} cannot be a trainer too: {', '.join(both)}")
    plan = HubPlan(root=root, settings=settings, learners=tuple(members))
    prepare(plan)
    keep = trainers(root)
    if new_trainers:
        path = plan.private / "trainers.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(sorted(set(keep) | set(new_trainers)), f)
        tmp.replace(path)
    who = list(only or ([] if new_trainers else members)) + list(new_trainers or [])
    return auth.issue(plan.private / "passwords.json", who)


def _plan(settings: Settings, cohort: str, root: Path, port: int) -> HubPlan:
    if os.geteuid() != 0:
        raise LadderlabError("the hub runs as root: it starts each learner's server as that learner's own account")
    try:
        import jupyterhub  # noqa: F401
    except ImportError:
        raise LadderlabError("JupyterHub is not installed: pip install -e '.[hub]' (make does it)") from None
    chp = proxy.path(settings)
    if not chp.exists():
        raise LadderlabError(f"the hub's proxy is not installed ({chp}): run `ladderlab setup --hub`")
    members = roster(settings, cohort)
    stored = auth.load(root / "private" / "passwords.json") if (root / "private" / "passwords.json").exists() else {}
    staff = [t for t in trainers(root) if t in stored and t not in members]
    missing = [m for m in members if m not in stored]
    if missing:
        raise UsageError(f"{len(missing)} learner(s) of {cohort!r} have no password yet ({', '.join(missing[:5])}"
                         f"{'...' if len(missing) > 5 else ''}): run `ladderlab hub passwords {cohort} --root {root}`")
    return HubPlan(root=root, settings=settings, learners=tuple(members), cohort=cohort, trainers=tuple(staff),
                   port=port, hub_port=_free_port(),
                   proxy_api_port=_free_port(), service_port=_free_port(), proxy=str(chp),
                   admin_token=os.environ.get(TEST_TOKEN_ENV) or None)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(plan: HubPlan) -> Path:
    """``<root>/private/jupyterhub_config.py``: the plan, for ``jupyterhub -f`` (0600, root's)."""
    prepare(plan)
    fields = {"root": str(plan.root), "settings_root": str(plan.settings.root), "cache": str(plan.settings.cache_dir),
              "learners": list(plan.learners), "cohort": plan.cohort, "trainers": list(plan.trainers),
              "port": plan.port, "hub_port": plan.hub_port, "proxy_api_port": plan.proxy_api_port,
              "service_port": plan.service_port, "proxy": plan.proxy, "admin_token": plan.admin_token}
    text = (
        "# Written by `ladderlab hub start`; it is rewritten at every start.\n"
        "import json, os\n"
        "from pathlib import Path\n"
        "from ladderlab.config import Settings\n"
        "from ladderlab.hub.config import HubPlan, configure\n"
        f"p = json.loads({json.dumps(json.dumps(fields))})\n"
        "os.environ['LADDERLAB_CACHE_DIR'] = p.pop('cache')\n"
        "p['learners'], p['trainers'] = tuple(p['learners']), tuple(p['trainers'])\n"
        "settings = Settings.from_env(Path(p.pop('settings_root')))\n"
        "configure(c, HubPlan(root=Path(p.pop('root')), settings=settings, **p))\n")
    path = plan.private / "jupyterhub_config.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


def _lock(plan: HubPlan) -> int:
    """``<root>/private/hub.lock``, held for the hub's life: a second ``hub start`` on the same root is refused
    (it would otherwise stop the running hub's PostgreSQL and firewall chain when it ends)."""
    prepare(plan)
    return hub_lock(plan.root)


def hub_lock(root: Path) -> int:
    """Take ``<root>/private/hub.lock`` (its fd: close it to let go); UsageError when a hub on ``root`` holds it."""
    import fcntl

    path = root / "private" / "hub.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UsageError(f"a hub already runs on {root} (it holds {path}): stop it first, or give another --root") \
            from None
    return fd


def start(settings: Settings, cohort: str, root: Path, port: int, say: Callable[[str], None],
          graders: database.GraderAccess | None = None) -> int:
    """Run the cohort's hub in the foreground, with its PostgreSQL; its exit code. With ``graders``, hand-ins are
    judged by whichever grader claims them from the hub's PostgreSQL (``ladderlab service grader`` on grading
    machines, and this machine's own service unless ``LADDERLAB_LOCAL_JUDGES=0``), and recorded here."""
    plan = _plan(settings, cohort, root.resolve(), port)
    lock = _lock(plan)

    def interrupted(signum: int, frame: object) -> None:  # until the hub runs: unwind, so the database is stopped
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}
    db = database.HubDatabase(plan.database)
    try:
        # The evidence record, nbgrader's gradebook and the grading queue on the hub's PostgreSQL: this process's
        # environment is what the hub gives its service (and what nbgrader's config in the course root reads).
        preset = []
        for var, url in db.start(say, graders).items():
            if os.environ.get(var) and os.environ[var] != url:
                say(f"{var} is set: the hub uses it, not its own PostgreSQL's {url.split('?')[0]}")
                preset.append(var)
            else:
                os.environ[var] = url
        if preset:  # the records are not all in the hub's own database: the cache is not told they are
            database.forget(settings)
            say(f"ladderlab's commands on {settings.cache_dir} need {', '.join(preset)} set as here to read the hub's "
                f"records")
        else:
            database.remember(settings, plan.root)
        _warn_of_earlier_gradings(settings, db, say)
        if graders is not None:
            from ladderlab.service.judging import URL_ENV

            os.environ[URL_ENV] = db.sqlalchemy_url(database.JUDGING)
            say(f"graders on other machines: PostgreSQL listens on {graders.listen}:{database.PORT} for "
                f"{graders.allow}; give each grading machine the URL `ladderlab hub database --grader-url --root "
                f"{plan.root}` prints (it holds the graders' password, kept across starts: delete "
                f"{db.grader_password_file} to change it)")
        return _run(plan, settings, cohort, say)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            db.stop()
        finally:
            os.close(lock)


def _warn_of_earlier_gradings(settings: Settings, db: database.HubDatabase, say: Callable[[str], None]) -> None:
    """A new gradebook beside a ledger that has graded hand-ins: those stay in the cache's SQLite gradebook and
    record (the ledger grades each version once), and the hub's do not have them; say how to bring them over."""
    from ladderlab.service.ledger import GRADED, Ledger
    from ladderlab.service.paths import ServicePaths

    paths = ServicePaths.of(settings)
    if "gradebook" not in db.created or not paths.ledger_db.exists():
        return
    graded = [sub for sub in Ledger(paths.ledger_db, readonly=True).all() if sub.status == GRADED]
    if graded:
        say(f"warning: {len(graded)} hand-in(s) were graded before this hub's PostgreSQL existed; their grades and "
            f"evidence are in the cache's SQLite files, not here. To bring the evidence over: ladderlab ladder "
            f"rebuild --course-root {paths.course_root} --db sqlite:///{paths.course_root / 'gradebook.db'}")


def _run(plan: HubPlan, settings: Settings, cohort: str, say: Callable[[str], None]) -> int:
    from ladderlab.service import cohorts
    from ladderlab.service.handin import ensure_released
    from ladderlab.service.paths import ServicePaths

    config = write_config(plan)
    for learner in plan.learners:
        accounts.ensure(learner, plan.homes)
    # What each learner's server is handed when it starts: the published labs as nbgrader released them (cheap when
    # nothing changed since `cohort add` or `cohort release` did it), and the gradebook given the labs and the roster.
    paths = ServicePaths.of(settings)
    ensure_released(settings, paths, say, skip_broken=True)
    cohorts.gradebook_add(paths, cohorts.members(paths, cohort))
    say(f"hub for cohort {cohort}: {len(plan.learners)} learner(s), http://127.0.0.1:{plan.port}/ "
        f"(state in {plan.private}; records in PostgreSQL, {plan.database}; stop with Ctrl-C)")
    log = (plan.private / "jupyterhub.log").open("a")
    started: list[subprocess.Popen[bytes]] = []
    asked = []

    def stop(signum: int, frame: object) -> None:  # installed before the hub starts: no signal is lost between
        asked.append(signum)
        for proc in started:
            proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        proc = subprocess.Popen([str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)],
                                cwd=plan.private, stdout=log, stderr=subprocess.STDOUT)
        started.append(proc)
        if asked:
            proc.send_signal(signal.SIGTERM)
        rc = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.close()
        from ladderlab.environments import learnerguard

        learnerguard.remove(accounts.ensure_group())  # the hub is gone: its learners' chain goes with it
    if rc not in (0, -signal.SIGTERM):
        say(f"the hub exited {rc}; its log: {plan.private / 'jupyterhub.log'}")
    return 0 if rc in (0, -signal.SIGTERM) else 1
