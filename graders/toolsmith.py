"""Checks of a small operational tool and its test suite (sys-3-tested-cli-tool).

The learner's tool (``/srv/<tool>/<tool>.py`` and its ``formats/`` plugins) and tests (``/srv/<tool>/tests``)
are read from their host through the Docker API and run only in fresh, network-less containers of the host's
image (``ctx.isolated``), never on the host:

* **acceptance**: one container serves hidden fixtures on localhost (tlsfleet, from the image: valid,
  expiring, expired, untrusted, misnamed and silent endpoints, on random ports, certificates made at check
  time), a plugin of ours is dropped into ``formats/``, and the tool runs once per scenario through
  ``docker exec`` (its exit code from the engine, its output bounded); the checks compare exact lines,
  parsed JSON and exit codes with what the scenario must give;
* **tests**: the learner's ``tests/`` run with pytest against the hidden reference implementation
  (``graders/_toolsmith_ref.py``), then against each of its mutants, each run in its own new container
  holding that one implementation, so no run can see the reference or compare it with a mutant.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from graders import _toolsmith_ref as ref
from ladderlab.grading.checks import CannotJudge, Context, Runner, Verdict, check, fail, ok

#: Where the tool lives on the learner's host (and in every container a check starts).
ROOT = "/srv/{tool}"
FLEET = "/usr/local/lib/ladderlab/tlsfleet.py"
#: Bytes of a run's stdout (and stderr) taken back; a file-size limit stops a tool that writes more.
OUTPUT_LIMIT = 16384
#: How long one run of the tool may take (a TIMEOUT scenario runs with --timeout 2).
TOOL_SECONDS = 20
#: How long one run of the learner's test suite may take (the notebook says so); a mutant run that takes
#: longer counts as caught (the usual rule of mutation testing).
SUITE_SECONDS = 30
#: Mutant runs at once (each in its own container): 10 mutants in 3 waves stay within the check deadline.
PARALLEL = 4
SAFE_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,100}$")


@dataclass(frozen=True)
class Run:
    """One run of the learner's tool: the engine's exit code and the (bounded) output."""

    rc: int
    out: str
    err: str

    def lines(self) -> list[str]:
        return self.out.splitlines()


@dataclass(frozen=True)
class Fixture:
    """The hidden endpoints of one acceptance run: their targets, and what each must be reported as."""

    targets: Mapping[str, str]  # name -> "localhost:<port>"
    days: Mapping[str, int]  # name -> days left (valid certificates only)


def _learner_files(ctx: Context, host: str, tool: str) -> dict[str, bytes]:
    """The tool, its formats and its tests from ``host`` (relative path -> bytes), read through the Docker API."""
    root = ROOT.format(tool=tool)
    files: dict[str, bytes] = {}
    main = ctx.read_file(host, f"{root}/{tool}.py")
    if main is not None:
        files[f"{tool}.py"] = main
    for folder in ("formats", "tests"):
        for name, data in ctx.read_dir(host, f"{root}/{folder}").items():
            if SAFE_NAME.match(name) and name not in (".", ".."):
                files[f"{folder}/{name}"] = data
    return files


def _put(box: Runner, root: str, files: Mapping[str, bytes]) -> None:
    for rel, data in files.items():
        box.put_file(f"{root}/{rel}", data)


def _bounded(command: str) -> str:
    """``command`` with a file-size limit, its output kept in files and at most OUTPUT_LIMIT bytes printed,
    and its own exit code as the shell's (the engine reports it)."""
    return ("ulimit -f 2048; " + command + " >/tmp/ll-out 2>/tmp/ll-err; rc=$?; "
            f"head -c {OUTPUT_LIMIT} /tmp/ll-out; head -c {OUTPUT_LIMIT} /tmp/ll-err >&2; exit $rc")


# --- acceptance ---------------------------------------------------------------------------------------


def _scenarios(fx: Fixture, warn_days: int, plugin: str) -> dict[str, list[str]]:
    """Each scenario's arguments, by id."""
    t = fx.targets
    ca = ["--cafile", "/run/ll-fleet/ca.pem"]
    return {
        "default-threshold": [*ca, t["ok"], t["soon"], t["mid"]],
        "days-low": ["--days", "3", *ca, t["mid"], t["soon"]],
        "days-high": ["--days", str(warn_days + 11), *ca, t["ok"]],
        "failures": ["--timeout", "2", *ca, t["expired"], t["self"], t["wrong"], t["silent"], t["closed"], t["ok"]],
        "json": ["--format", "json", "--timeout", "2", *ca, t["ok"], t["expired"], t["closed"]],
        "plugin": ["--format", plugin, *ca, t["ok"], t["soon"]],
        "rc-ok": [*ca, t["ok"]],
        "rc-expiring": [*ca, t["soon"]],
        "rc-expired": [*ca, t["expired"]],
        "rc-bad-cert": [*ca, t["self"]],
        "rc-unreachable": [*ca, t["closed"]],
        "rc-timeout": ["--timeout", "2", *ca, t["silent"]],
        "rc-worst-first": [*ca, t["expired"], t["soon"], t["ok"]],
        "rc-worst-middle": [*ca, t["ok"], t["closed"], t["soon"]],
        "usage-no-target": [*ca],
        "usage-unknown-format": ["--format", "nosuch", *ca, t["ok"]],
        "usage-bad-target": [*ca, "localhost:notaport"],
    }


PLUGIN = '''"""A format the grader drops in: the tool must pick it up by name, unchanged."""


def render(results):
    return "{token}:" + ",".join("%s|%s|%s" % (r["target"], r["status"], r["days_left"]) for r in results)
'''


def _start_fleet(box: Runner, fx: Fixture, warn_days: int) -> None:
    """Serve the fixture endpoints in ``box`` (tlsfleet of the image) and wait until they listen."""
    days = {"ok": warn_days + 10.5, "soon": warn_days - 0.5, "mid": 5.5, "expired": -2}
    endpoints: list[dict[str, Any]] = [
        {"port": int(fx.targets[n].rsplit(":", 1)[1]), "kind": "tls", "days": d} for n, d in days.items()]
    endpoints += [{"port": int(fx.targets[n].rsplit(":", 1)[1]), "kind": n} for n in ("self", "wrong", "silent")]
    spec = json.dumps({"endpoints": endpoints})
    started = box.run("(nohup python3 %s /run/ll-fleet %s >/run/ll-fleet.log 2>&1 &); "
                      "for _ in $(seq 150); do grep -q ready /run/ll-fleet.log 2>/dev/null && exit 0; sleep 0.1; done; "
                      "tail -c 400 /run/ll-fleet.log; exit 1", FLEET, spec, timeout=30)
    if started.failed:
        raise CannotJudge(f"the fixture fleet did not start: {started.stdout.strip()[-200:]}")


def _fixture(warn_days: int) -> Fixture:
    """Endpoints on random ports (a tool cannot know them in advance), and the days left on the valid ones."""
    base = 20000 + secrets.randbelow(20000)
    names = ("ok", "soon", "mid", "expired", "self", "wrong", "silent", "closed")
    return Fixture({n: f"localhost:{base + i}" for i, n in enumerate(names)},
                   {"ok": warn_days + 10, "soon": warn_days - 1, "mid": 5})


@dataclass(frozen=True)
class Acceptance:
    """Every scenario's run, or why none could run (the learner's tool is missing)."""

    missing: str
    runs: Mapping[str, Run]
    fixture: Fixture
    plugin: str
    token: str


def _acceptance(ctx: Context, host: str, tool: str, warn_days: int) -> Acceptance:
    files = _learner_files(ctx, host, tool)
    fx = _fixture(warn_days)
    plugin, token = f"ll_{secrets.token_hex(4)}", secrets.token_hex(6)
    root = ROOT.format(tool=tool)
    if f"{tool}.py" not in files:
        return Acceptance(f"{host}: {root}/{tool}.py does not exist", {}, fx, plugin, token)
    runs: dict[str, Run] = {}
    with ctx.isolated(host) as box:
        _put(box, root, {rel: data for rel, data in files.items() if not rel.startswith("tests/")})
        box.put_file(f"{root}/formats/{plugin}.py", PLUGIN.replace("{token}", token).encode())
        _start_fleet(box, fx, warn_days)
        for sid, argv in _scenarios(fx, warn_days, plugin).items():
            r = box.run(_bounded("cd %s && timeout -k 2 " + str(TOOL_SECONDS) + " python3 %s" + " %s" * len(argv)),
                        root, f"{tool}.py", *argv, timeout=TOOL_SECONDS + 15)
            runs[sid] = Run(r.rc, r.stdout, r.stderr)
    return Acceptance("", runs, fx, plugin, token)


def acceptance(ctx: Context, host: str, tool: str, warn_days: int) -> Acceptance:
    """The acceptance runs, once per grading (the checks of one grading share them)."""
    return ctx.cached(f"toolsmith:acceptance:{host}:{tool}:{warn_days}",
                      lambda: _acceptance(ctx, host, tool, int(warn_days)))


def _line(t: str, status: str, days: int | None) -> str:
    return f"{t} {status} {'-' if days is None else days}"


def _compare(acc: Acceptance, sid: str, expected: Sequence[str], what: str) -> str:
    """Why scenario ``sid``'s output is not exactly ``expected`` (empty when it is)."""
    run = acc.runs[sid]
    got = run.lines()
    if got == list(expected):
        return ""
    for i, want in enumerate(expected):
        if i >= len(got):
            return f"{what}: expected the line {want!r}, the output ended after {len(got)} line(s) (rc {run.rc})"
        if got[i] != want:
            return f"{what}: expected {want!r}, got {got[i][:120]!r}"
    extra = got[len(expected)][:120]
    return f"{what}: {len(got) - len(expected)} line(s) more than the {len(expected)} expected: {extra!r}"


@check
def expiry_statuses(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """Valid certificates: OK/EXPIRING by whole days left against the default (seeded) threshold and ``--days``,
    one exact text line per target, in order."""
    acc = acceptance(ctx, host, tool, warn_days)
    if acc.missing:
        return fail(acc.missing)
    t, d = acc.fixture.targets, acc.fixture.days
    cases = [
        ("default-threshold", [_line(t["ok"], "OK", d["ok"]), _line(t["soon"], "EXPIRING", d["soon"]),
                               _line(t["mid"], "EXPIRING", d["mid"])],
         f"without --days (the default threshold is {warn_days} days)"),
        ("days-low", [_line(t["mid"], "OK", d["mid"]), _line(t["soon"], "OK", d["soon"])], "with --days 3"),
        ("days-high", [_line(t["ok"], "EXPIRING", d["ok"])], f"with --days {warn_days + 11}"),
    ]
    for sid, expected, what in cases:
        why = _compare(acc, sid, expected, what)
        if why:
            return fail(why)
    return ok(f"OK and EXPIRING by whole days left, against {warn_days} days by default and against --days")


@check
def failure_modes(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """Expired, untrusted, misnamed, silent and closed endpoints are reported as EXPIRED, BAD_CERT, BAD_CERT,
    TIMEOUT and UNREACHABLE, and the tool carries on with the next target."""
    acc = acceptance(ctx, host, tool, warn_days)
    if acc.missing:
        return fail(acc.missing)
    t, d = acc.fixture.targets, acc.fixture.days
    expected = [_line(t["expired"], "EXPIRED", None), _line(t["self"], "BAD_CERT", None),
                _line(t["wrong"], "BAD_CERT", None), _line(t["silent"], "TIMEOUT", None),
                _line(t["closed"], "UNREACHABLE", None), _line(t["ok"], "OK", d["ok"])]
    why = _compare(acc, "failures", expected,
                   "expired, self-signed, misnamed, silent, closed, then a valid endpoint (--timeout 2)")
    return fail(why) if why else ok("expired, bad, silent and closed endpoints are each reported, and the run goes on")


@check
def json_format(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """``--format json`` prints one JSON array of {target, status, days_left} objects, in target order."""
    acc = acceptance(ctx, host, tool, warn_days)
    if acc.missing:
        return fail(acc.missing)
    t, d = acc.fixture.targets, acc.fixture.days
    expected = [{"target": t["ok"], "status": "OK", "days_left": d["ok"]},
                {"target": t["expired"], "status": "EXPIRED", "days_left": None},
                {"target": t["closed"], "status": "UNREACHABLE", "days_left": None}]
    run = acc.runs["json"]
    try:
        got = json.loads(run.out)
    except ValueError:
        return fail(f"--format json did not print JSON (rc {run.rc}): {run.out.strip()[:100]!r}")
    if got != expected:
        return fail(f"--format json for a valid, an expired and a closed endpoint: expected {json.dumps(expected)}, "
                    f"got {json.dumps(got)[:200]}")
    for item in got:  # 1 == True and 1.0 == 1 in Python: the JSON types must be exactly int and null
        if type(item["days_left"]) not in (int, type(None)):
            return fail(f"--format json: days_left must be an integer or null, got {item['days_left']!r}")
    return ok("--format json prints the results as a JSON array, in target order")


@check
def plugin_picked_up(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """A format module the check drops into ``formats/`` is used by ``--format <its name>``, unchanged."""
    acc = acceptance(ctx, host, tool, warn_days)
    if acc.missing:
        return fail(acc.missing)
    t, d = acc.fixture.targets, acc.fixture.days
    want = f"{acc.token}:{t['ok']}|OK|{d['ok']},{t['soon']}|EXPIRING|{d['soon']}"
    run = acc.runs["plugin"]
    if run.lines() != [want]:
        first = (run.lines() or [""])[0]
        return fail(f"a new formats/{acc.plugin}.py was not used by --format {acc.plugin}: expected its output "
                    f"{want[:80]!r}, got {first[:80]!r} (rc {run.rc})")
    return ok(f"formats/{acc.plugin}.py, dropped in, was picked up by --format {acc.plugin}")


@check
def exit_codes(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """The exit code is the worst of the targets' (0 OK, 1 EXPIRING, 2 EXPIRED/BAD_CERT, 3 UNREACHABLE/TIMEOUT);
    a usage error exits 4 and prints nothing on stdout."""
    acc = acceptance(ctx, host, tool, warn_days)
    if acc.missing:
        return fail(acc.missing)
    expected = {"rc-ok": (0, "a valid certificate"), "rc-expiring": (1, "an expiring certificate"),
                "rc-expired": (2, "an expired certificate"), "rc-bad-cert": (2, "a self-signed certificate"),
                "rc-unreachable": (3, "a closed port"), "rc-timeout": (3, "a silent server"),
                "rc-worst-first": (2, "expired, then expiring, then valid"),
                "rc-worst-middle": (3, "valid, then closed, then expiring"),
                "usage-no-target": (4, "no target"), "usage-unknown-format": (4, "--format nosuch"),
                "usage-bad-target": (4, "the target localhost:notaport")}
    for sid, (code, what) in expected.items():
        run = acc.runs[sid]
        if run.rc != code:
            return fail(f"{what}: exit code {run.rc}, expected {code}")
        if sid.startswith("usage-") and run.out.strip():
            return fail(f"{what}: a usage error must print nothing on stdout (got {run.out.strip()[:80]!r})")
    return ok("exit codes 0-3 by the worst target, 4 for usage errors")


# --- the learner's tests ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SuiteRun:
    """One run of the learner's test suite against one implementation. Only the exit code is kept: what
    the tests print is the learner's, and feedback must not carry it (it could quote the hidden reference)."""

    rc: int  # pytest's: 0 all passed, 1 some failed, 2 interrupted, 5 no tests collected; -1 ran too long


def _suite(ctx: Context, host: str, tool: str, tests: Mapping[str, bytes], impl: Mapping[str, str]) -> SuiteRun:
    """The learner's tests against ``impl`` (relative path -> source), in a new network-less container."""
    root = ROOT.format(tool=tool)
    salt = f"\n# {secrets.token_hex(8)}\n"  # no two runs' files are byte for byte alike (no hash to learn)
    with ctx.isolated(host) as box:
        _put(box, root, {rel: (text + salt).encode() for rel, text in impl.items()})
        _put(box, root, tests)
        r = box.run(_bounded("cd %s && timeout -k 2 " + str(SUITE_SECONDS) +
                             " python3 -m pytest -q -p no:cacheprovider -x tests"), root, timeout=SUITE_SECONDS + 20)
    return SuiteRun(-1 if r.rc in (124, 137) else r.rc)


def _tests(ctx: Context, host: str, tool: str) -> dict[str, bytes]:
    return {rel: data for rel, data in _learner_files(ctx, host, tool).items() if rel.startswith("tests/")}


def reference_run(ctx: Context, host: str, tool: str, warn_days: int) -> SuiteRun | None:
    """The learner's tests against the reference (None: no test file), once per grading."""

    def run() -> SuiteRun | None:
        tests = _tests(ctx, host, tool)
        if not any(re.match(r"^tests/test_.*\.py$", rel) for rel in tests):
            return None
        return _suite(ctx, host, tool, tests, ref.sources(tool, int(warn_days)))

    return ctx.cached(f"toolsmith:reference:{host}:{tool}:{warn_days}", run)


@check
def tests_pass_reference(ctx: Context, *, host: str, tool: str, warn_days: int) -> Verdict:
    """The learner's tests pass against the hidden reference implementation (no network)."""
    found = reference_run(ctx, host, tool, warn_days)
    root = ROOT.format(tool=tool)
    if found is None:
        return fail(f"{host}: no tests in {root}/tests (files named test_*.py)")
    if found.rc == 5:
        return fail(f"{root}/tests: pytest collected no tests")
    if found.rc != 0:
        what = f"ran longer than {SUITE_SECONDS}s" if found.rc < 0 else f"failed (pytest exit {found.rc})"
        return fail(f"your tests {what} against a correct implementation of the documented API, without network: "
                    f"test only what the instructions document")
    return ok("your tests pass against a correct implementation of the documented API")


@check
def tests_kill_mutants(ctx: Context, *, host: str, tool: str, warn_days: int, min_killed: int) -> Verdict:
    """The learner's tests fail against at least ``min_killed`` of the hidden mutants of the reference
    (each a one-spot slip), and pass against the reference itself."""
    found = reference_run(ctx, host, tool, warn_days)
    if found is None or found.rc != 0:
        return fail("your tests must first pass against a correct implementation: only then does a failure against "
                    "a broken one count")
    tests = _tests(ctx, host, tool)

    def one(mutant: ref.Mutant) -> bool:
        return _suite(ctx, host, tool, tests, ref.sources(tool, int(warn_days), mutant)).rc != 0

    total = len(ref.MUTANTS)
    killed = survived = 0
    with ThreadPoolExecutor(max_workers=PARALLEL) as pool:  # in waves, until the verdict is certain
        for start in range(0, total, PARALLEL):
            for caught in pool.map(one, ref.MUTANTS[start:start + PARALLEL]):
                killed, survived = killed + caught, survived + (not caught)
            if killed >= min_killed or survived > total - min_killed:
                break
    if killed < min_killed:
        return fail(f"your tests let {survived} of {total} broken implementations through (each with one slip a "
                    f"reviewer could miss): at least {min_killed} of them must make your tests fail")
    return ok(f"your tests caught {killed} of the {killed + survived} broken implementations they met "
              f"(at least {min_killed} of {total} were needed)")
