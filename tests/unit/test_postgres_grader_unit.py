"""graders/postgres.py's verdicts (no Docker): each check against a simulated server that answers the grader's
client sessions the way PostgreSQL would for one configuration, and for the nearest wrong configurations.

The client itself (the wire protocol, TLS, SCRAM) is exercised against the real PostgreSQL 15 by the lab's
self-test (tests/labs/test_selftest.py): every solution there passes only if SCRAM logins work."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from ladderlab.environments.transports.base import CommandResult
from ladderlab.grading.checks import FileStat, Process, Verdict, evaluate, is_disruptive, load_graders
from ladderlab.testing import FakeContext
from tests.conftest import ROOT

load_graders(ROOT)
from graders import _net, postgres  # noqa: E402  (importable once load_graders ran)

TENANT = "acme-1f2e"
TENANTS = {"acme-1f2e": 4, "globex-1f2e": 5, "initech-1f2e": 6}
PASSWORDS = {"migrator": "pw-m", "app_ro": "pw-ro", "analyst": "pw-a"}
HOSTS = {"migrator": "app", "app_ro": "app", "analyst": "ws1"}
ADDRESSES = {"db": "10.0.0.2", "app": "10.0.0.3", "ws1": "10.0.0.4", "ws2": "10.0.0.5", "probe": "10.0.0.6"}
SECRET = b"user=app_v2\npassword=new-pw\n"
PRIVATE = FileStat(0o400, 990, 990, 30)


@dataclass
class Server:
    """What the database does, as the checks can see it; defaults: the notebook's solution."""

    home: dict[str, str] = field(default_factory=lambda: {**HOSTS, "app_v2": "app", "app": "app"})
    passwords: dict[str, str] = field(default_factory=lambda: {**PASSWORDS, "app_v2": "new-pw"})
    superusers: set[str] = field(default_factory=set)
    members_rw: set[str] = field(default_factory=lambda: {"app_v2"})
    allowed: dict[str, set[str]] = field(default_factory=lambda: {
        "app_v2": {"select", "insert", "update", "delete"}, "app_ro": {"select"}, "analyst": {"select"},
        "migrator": {"select", "insert", "update", "delete", "ddl"}})
    visible: dict[str, dict[str, int]] = field(default_factory=lambda: {
        "app_v2": dict(TENANTS), "app_ro": dict(TENANTS), "analyst": {TENANT: TENANTS[TENANT]}, "migrator": {}})
    forced: bool = True
    owner: str = "migrator"
    public: tuple[str, str, str] = ("f", "f", "f")
    auth: str = "scram-sha-256"
    plaintext: bool = False
    any_host: bool = False
    old_login: bool = False

    def session(self, source: str, spec: dict[str, Any]) -> dict[str, Any]:
        user, tls = spec["user"], spec.get("tls", True)
        out: dict[str, Any] = {"connected": False, "tls": tls, "auth": "", "code": "28000", "message": "", "steps": []}
        if user == "app":
            if not self.old_login or source != "app":
                return out
        elif user not in self.home or (self.home[user] != source and not self.any_host):
            return out
        if not tls and not self.plaintext:
            return out
        if user != "app" and spec["password"] != self.passwords.get(user):
            return {**out, "code": "28P01"}
        out.update(connected=True, auth=self.auth, code="")
        for step in spec.get("steps", []):
            out["steps"].append(self.query(user, step["sql"]))
        return out

    def query(self, user: str, sql: str) -> dict[str, Any]:
        def rows(*r: list[Any]) -> dict[str, Any]:
            return {"ok": True, "rows": list(r), "code": "", "message": ""}

        denied = {"ok": False, "rows": [], "code": "42501", "message": "permission denied"}
        su = user in self.superusers
        if sql.startswith("SELECT rolsuper"):
            return rows(["t" if su else "f", "t" if user in self.members_rw else "f"])
        if sql.startswith("SELECT c.relrowsecurity"):
            return rows(["t", "t" if self.forced else "f", self.owner])
        if sql.startswith("SELECT has_database_privilege"):
            return rows(list(self.public))
        seen = dict(TENANTS) if su or (user == self.owner and not self.forced) else self.visible.get(user, {})
        if sql.startswith("SELECT tenant, count(*)"):
            return rows(*[[t, str(n)] for t, n in sorted(seen.items())])
        for action, probe in postgres.PROBES.items():
            if sql == probe.format(tenant=TENANT):
                if not su and action not in self.allowed.get(user, set()):
                    return denied
                return rows([str(sum(seen.values()))]) if action == "select" else rows()
        raise AssertionError(f"unexpected SQL {sql!r}")


class PGRunner:
    """An observer in ``source``'s network namespace that runs the grader's client against ``server``."""

    def __init__(self, server: Server, source: str) -> None:
        self.server, self.source = server, source

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        if args and args[0] == postgres.PG_SCRIPT:
            specs = json.loads(str(args[1]))
            assert all(s["address"] == ADDRESSES["db"] and s["database"] == "appdb" for s in specs)
            out = {"sessions": [self.server.session(self.source, s) for s in specs]}
            return CommandResult(command, 0, json.dumps(out), "")
        if args and args[0] == _net.HTTP_SCRIPT:
            body = json.dumps({"ok": True, "user": "app_v2", "rows": 15})
            return CommandResult(command, 0, json.dumps({"status": 200, "location": "", "body": body}), "")
        raise AssertionError(f"unexpected command {command!r}")

    def put_file(self, path: str, data: bytes) -> None:
        raise AssertionError("no files expected")


def context(server: Server, *, secret: bytes = SECRET, watch: dict[str, Any] | None = None,
            stat: FileStat | None = PRIVATE) -> FakeContext:
    observers = {h: PGRunner(server, h) for h in ("app", "ws1", "ws2", "probe")}
    now = time.time()
    record = watch if watch is not None else {"started": now - 60, "since": now - 55, "last": now - 0.1,
                                              "ok": 550, "failed": 0, "failures": []}
    return FakeContext(observers, addresses=ADDRESSES,  # type: ignore[arg-type]
                       files={("app", "/etc/app/db.secret"): secret,
                              ("watch", "/var/lib/watch/state.json"): json.dumps(record).encode()},
                       stats={("app", "/etc/app/db.secret"): stat} if stat else {})


COMMON = {"db": "db", "database": "appdb"}
ACCOUNTS = {**COMMON, "passwords": PASSWORDS, "hosts": HOSTS, "secret_host": "app",
            "secret_path": "/etc/app/db.secret"}
ARGS: dict[str, tuple[Any, dict[str, Any]]] = {
    "matrix": (postgres.privilege_matrix, {**ACCOUNTS, "tenant": TENANT, "rows": list(TENANTS.values())}),
    "tenant": (postgres.tenant_isolation, {**COMMON, "password": "pw-a", "host": "ws1", "tenant": TENANT,
                                           "tenants": [[t, n] for t, n in TENANTS.items()]}),
    "forced": (postgres.rls_forced, {**COMMON, "password": "pw-m", "host": "app"}),
    "public": (postgres.public_revoked, {**COMMON, "password": "pw-ro", "host": "app"}),
    "tls": (postgres.tls_scram_only, ACCOUNTS),
    "hosts": (postgres.hosts_restricted, {**ACCOUNTS, "sources": ["app", "ws1", "ws2"]}),
    "rotated": (postgres.rotated, {**COMMON, "secret_host": "app", "secret_path": "/etc/app/db.secret",
                                   "old_user": "app", "old_password": "old-pw", "new_password": "new-pw"}),
    "downtime": (postgres.no_downtime, {"secret_host": "app", "secret_path": "/etc/app/db.secret",
                                        "new_password": "new-pw"}),
    "private": (postgres.secret_private, {"host": "app", "path": "/etc/app/db.secret", "owner_uid": 990}),
}


def verdicts(ctx: FakeContext) -> dict[str, str]:
    return {name: evaluate(ctx, fn, args).status for name, (fn, args) in ARGS.items()}


def test_the_solution_passes_every_check():
    ctx = context(Server())
    for name, (fn, args) in ARGS.items():
        verdict = evaluate(ctx, fn, args)
        assert verdict.status == "passed", (name, verdict.feedback)


@pytest.mark.parametrize(("wrong", "failing"), [
    (Server(superusers={"app_v2"}), {"matrix"}),
    (Server(allowed={**Server().allowed, "app_ro": {"select", "insert"}}), {"matrix"}),
    (Server(members_rw=set()), {"matrix"}),
    (Server(visible={**Server().visible, "app_v2": {TENANT: 4}}), {"matrix"}),
    (Server(visible={**Server().visible, "analyst": dict(TENANTS)}), {"tenant"}),
    (Server(visible={**Server().visible, "analyst": {}}), {"tenant"}),
    (Server(forced=False), {"forced"}),
    (Server(public=("t", "t", "f")), {"public"}),
    (Server(public=("f", "f", "t")), {"public"}),
    (Server(plaintext=True), {"tls"}),
    (Server(auth="password"), {"tls"}),
    (Server(auth="md5"), {"tls"}),
    (Server(any_host=True), {"hosts"}),
    (Server(old_login=True), {"rotated"}),
], ids=["app-superuser", "ro-inserts", "app-not-in-rw", "app-sees-one-tenant", "analyst-sees-all",
        "analyst-sees-none", "not-forced", "public-connect", "public-create", "plaintext", "password-auth",
        "md5-auth", "any-host", "old-login"])
def test_each_nearest_wrong_server_fails_exactly_its_check(wrong, failing):
    found = verdicts(context(wrong))
    assert {n for n, s in found.items() if s != "passed"} == failing, found
    assert all(s in ("passed", "failed") for s in found.values()), found


def test_the_owner_not_migrator_fails_rls_forced():
    assert verdicts(context(Server(owner="postgres")))["forced"] == "failed"


def test_a_downtime_in_the_watchers_record_fails_and_a_stale_record_cannot_be_judged():
    now = time.time()
    bad = {"started": now - 60, "since": now - 55, "last": now, "ok": 500, "failed": 3,
           "failures": [[now - 20, "status 503"]]}
    assert verdicts(context(Server(), watch=bad))["downtime"] == "failed"
    stale = {"started": now - 600, "since": now - 590, "last": now - 120, "ok": 50, "failed": 0, "failures": []}
    assert verdicts(context(Server(), watch=stale))["downtime"] == "error"


def test_no_rotation_fails_rotated_and_downtime():
    found = verdicts(context(Server(old_login=True), secret=b"user=app\npassword=old-pw\n"))
    assert found["rotated"] == found["downtime"] == "failed"


@pytest.mark.parametrize("stat", [FileStat(0o644, 990, 990, 30), FileStat(0o400, 0, 0, 30),
                                  FileStat(0o440, 990, 990, 30), None])
def test_a_readable_or_foreign_secret_fails(stat):
    assert verdicts(context(Server(), stat=stat))["private"] == "failed"


# --- the password in no command line or environment ---------------------------------------------------------

def exposure_context(*, procs: list[Process] | None = None, environs: dict[int, list[str]] | None = None,
                     worker: dict[str, Any] | None = None) -> FakeContext:
    now = time.time()
    status = worker if worker is not None else {"t": now - 1, "ok": True, "user": "app_v2", "rows": 15}
    return FakeContext(files={("app", "/etc/app/db.secret"): SECRET,
                              ("app", "/run/app/worker.json"): json.dumps(status).encode()},
                       procs={"app": procs if procs is not None else [
                           Process(990, 40, "python3 /usr/local/lib/ladderlab/app.py /etc/app/db.secret"),
                           Process(990, 52, "python3 /usr/local/lib/ladderlab/worker.py /etc/app/db.secret")]},
                       environs={"app": environs if environs is not None else {
                           1: ["PATH=/usr/bin", "LL_ROLE=app"], 40: ["HOME=/nonexistent"], 52: ["LANG=C.UTF-8"]}})


EXPOSED = {"host": "app", "secret_path": "/etc/app/db.secret", "old_password": "old-pw", "new_password": "new-pw"}


def exposed(ctx: FakeContext) -> Verdict:
    return evaluate(ctx, postgres.secret_not_exposed, EXPOSED)


def test_no_password_in_argv_or_environment_and_a_working_worker_passes():
    verdict = exposed(exposure_context())
    assert verdict.status == "passed", verdict.feedback


@pytest.mark.parametrize(("where", "ctx"), [
    ("environment", exposure_context(environs={52: ["DATABASE_URL=postgresql://app_v2:new-pw@db/appdb"]})),
    ("environment", exposure_context(environs={77: ["LANG=C", "PGPASSWORD=old-pw"]})),
    ("command line", exposure_context(procs=[Process(990, 52, "python3 worker.py --password new-pw")])),
    ("command line", exposure_context(procs=[Process(0, 9, "sh -c psql postgresql://app:old-pw@db/appdb")])),
], ids=["new-in-env", "old-in-env", "new-in-argv", "old-in-argv"])
def test_either_password_in_a_command_line_or_an_environment_fails_without_showing_it(where, ctx):
    verdict = exposed(ctx)
    assert verdict.status == "failed" and where in verdict.feedback, verdict.feedback
    assert "new-pw" not in verdict.feedback and "old-pw" not in verdict.feedback


def test_a_password_in_a_variables_name_or_a_programs_name_is_not_shown_either():
    verdict = exposed(exposure_context(environs={52: ["new-pw=1"]}))
    assert verdict.status == "failed" and "new-pw" not in verdict.feedback, verdict.feedback
    verdict = exposed(exposure_context(procs=[Process(0, 9, "/tmp/new-pw --serve")]))
    assert verdict.status == "failed" and "new-pw" not in verdict.feedback, verdict.feedback


def test_the_feedback_names_the_program_and_the_variable():
    assert "process sh (uid 990)" in exposed(exposure_context(procs=[Process(990, 9, "/bin/sh -c x=new-pw")])).feedback
    assert "pid 52 (variable PGPASSWORD)" in exposed(exposure_context(environs={52: ["PGPASSWORD=old-pw"]})).feedback


@pytest.mark.parametrize("worker", [{}, {"t": time.time() - 60, "ok": True, "user": "app_v2"},
                                    {"t": time.time(), "ok": False, "error": "password authentication failed"},
                                    {"t": time.time(), "ok": True, "user": "app"}],
                         ids=["no-status", "stopped", "failing", "another-login"])
def test_a_worker_stopped_failing_or_not_on_the_files_login_fails(worker):
    assert exposed(exposure_context(worker=worker)).status == "failed"


# --- the alert on failed logins -----------------------------------------------------------------------------

class Clock:
    """The check's time: sleeping advances it, and what the learner's alerting would have sent meanwhile is
    computed from the failures the simulated server saw."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Alerting:
    """The learner's alerting: ``threshold`` failures of one address within ``window`` s send an alert after
    ``latency`` s naming ``name(address)``; ``timer``: also one every ``timer`` s naming the last failing address."""

    threshold: int = 5
    window: float = 30.0
    latency: float = 1.0
    name: Callable[[str], str | None] = lambda address: address
    timer: float = 0.0

    def alerts(self, failures: list[tuple[float, str]], until: float, since: float) -> list[dict[str, Any]]:
        out, recent = [], {}  # type: ignore[var-annotated]
        for at, address in failures:
            times = [t for t in recent.get(address, []) if at - t <= self.window] + [at]
            recent[address] = times
            if len(times) >= self.threshold:
                out.append({"t": at + self.latency, "peer": "10.0.0.2", "source": self.name(address), "body": "{}"})
                recent[address] = []
        if self.timer and failures:
            t = since
            while t <= until:
                last = [a for at, a in failures if at <= t]
                if last:
                    out.append({"t": t, "peer": "10.0.0.2", "source": last[-1], "body": "{}"})
                t += self.timer
        return sorted((a for a in out if a["t"] <= until), key=lambda a: a["t"])


class AlertContext(FakeContext):
    """A FakeContext whose receiver's record is what ``alerting`` would have sent by the clock's time."""

    def __init__(self, server: Server, clock: Clock, alerting: Alerting | None, earlier: list[tuple[float, str]]):
        observers = {h: FailRecorder(server, h, clock, self) for h in ("app", "ws1", "ws2")}
        super().__init__(observers, addresses=ADDRESSES)  # type: ignore[arg-type]
        self.clock, self.alerting, self.failures = clock, alerting, list(earlier)
        self.start = clock.now

    def read_file(self, host: str, path: str) -> bytes | None:
        assert (host, path) == ("alerts", "/var/lib/alerts/alerts.jsonl")
        if self.alerting is None:
            return b""
        found = self.alerting.alerts(self.failures, self.clock.now, self.start - 120)
        return "".join(json.dumps(a) + "\n" for a in found).encode()


class FailRecorder(PGRunner):
    def __init__(self, server: Server, source: str, clock: Clock, ctx: AlertContext) -> None:
        super().__init__(server, source)
        self.clock, self.ctx = clock, ctx

    def run(self, command: str, *args: object, timeout: float | None = None) -> CommandResult:
        result = super().run(command, *args, timeout=timeout)
        for s in json.loads(result.stdout)["sessions"]:
            if s["code"] == "28P01":
                self.clock.now += 0.05
                self.ctx.failures.append((self.clock.now, ADDRESSES[self.source]))
        return result


ALERT_ARGS = {**COMMON, "sources": [["app", "app_ro"], ["ws1", "analyst"]]}


def alert_verdict(monkeypatch: pytest.MonkeyPatch, alerting: Alerting | None, *, server: Server | None = None,
                  sources: list[list[str]] | None = None, earlier: int = 1) -> tuple[Verdict, AlertContext]:
    clock = Clock()
    monkeypatch.setattr(postgres, "time", clock)
    # the other checks' failed logins before this one runs: rotated's old login, from app
    before = [(clock.now - 3 - i, ADDRESSES["app"]) for i in range(earlier)]
    ctx = AlertContext(server or Server(), clock, alerting, before)
    args = {**ALERT_ARGS, "sources": sources} if sources else ALERT_ARGS
    return evaluate(ctx, postgres.login_alert, args), ctx


@pytest.mark.parametrize("source", [["app", "app_ro"], ["ws1", "analyst"]], ids=["from-app", "from-ws1"])
def test_an_alert_at_five_failures_naming_the_source_passes(monkeypatch, source):
    verdict, ctx = alert_verdict(monkeypatch, Alerting(), sources=[source])
    assert verdict.status == "passed", verdict.feedback
    mine = [f for f in ctx.failures if f[0] >= ctx.start]
    assert len(mine) == 5 and {a for _, a in mine} == {ADDRESSES[source[0]]}


def test_the_source_is_chosen_when_the_check_runs(monkeypatch):
    chosen = set()
    for _ in range(30):
        verdict, ctx = alert_verdict(monkeypatch, Alerting())
        assert verdict.status == "passed", verdict.feedback
        chosen |= {a for t, a in ctx.failures if t >= ctx.start}
    assert chosen == {ADDRESSES["app"], ADDRESSES["ws1"]}


@pytest.mark.parametrize(("alerting", "says"), [
    (None, "no alert"),
    (Alerting(threshold=6), "no alert"),
    (Alerting(latency=25), "no alert"),
    (Alerting(threshold=4), "only 4"),
    (Alerting(threshold=1), "only 4"),
    (Alerting(name=lambda address: ADDRESSES["db"]), "named '10.0.0.2'"),
    (Alerting(name=lambda address: None), "no source"),
    (Alerting(timer=10), "no address had failed"),
], ids=["none", "at-six", "too-late", "at-four", "every-failure", "names-the-server", "names-nothing", "timer"])
def test_a_wrong_alerting_fails(monkeypatch, alerting, says):
    for source in (["app", "app_ro"], ["ws1", "analyst"]):
        verdict, _ = alert_verdict(monkeypatch, alerting, sources=[source])
        assert verdict.status == "failed" and says in verdict.feedback, (source, verdict.feedback)


def test_older_failed_logins_of_the_source_age_out_before_the_check_counts(monkeypatch):
    # four failures from app just before the check (the other checks', the notebook's tests): a correct
    # alerting must not be blamed for counting them
    verdict, _ = alert_verdict(monkeypatch, Alerting(), sources=[["app", "app_ro"]], earlier=4)
    assert verdict.status == "passed", verdict.feedback


def test_a_login_that_is_not_refused_by_password_fails(monkeypatch):
    verdict, _ = alert_verdict(monkeypatch, Alerting(), server=Server(home={**Server().home, "analyst": "ws2"}),
                               sources=[["ws1", "analyst"]])
    assert verdict.status == "failed" and "cannot make failed logins" in verdict.feedback, verdict.feedback


def test_a_missing_receiver_record_cannot_be_judged(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(postgres, "time", clock)
    ctx = FakeContext({h: PGRunner(Server(), h) for h in ("app", "ws1")}, addresses=ADDRESSES)  # type: ignore[arg-type]
    assert evaluate(ctx, postgres.login_alert, ALERT_ARGS).status == "error"


def test_the_alert_check_is_disruptive():
    assert is_disruptive(postgres.login_alert) and not is_disruptive(postgres.secret_not_exposed)
