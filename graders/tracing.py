"""Debugging checks (strace labs): the service's behaviour seen from the probe, its
processes as the engine lists them, and the learner's named answers compared
with the fault the seed injected."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

from graders._net import http_get
from ladderlab.grading.checks import Context, Verdict, check, fail, ok

#: What a trace shows for each fault the debug environment injects (``ll-fault``): the syscall that
#: fails, what it fails on, and how. A slow syscall does not fail: it never returns.
FAULTS: dict[str, dict[str, Callable[[dict[str, str | int]], set[str]]]] = {
    "wrong-path": {"syscall": lambda p: {"openat", "open"}, "errno": lambda p: {"enoent"},
                   "target": lambda p: {"/etc/ledgerd/ledgerd.conf"}},
    "permission": {"syscall": lambda p: {"openat", "open"}, "errno": lambda p: {"eacces"},
                   "target": lambda p: {"/var/lib/ledgerd/ledger.db"}},
    "dependency-port": {"syscall": lambda p: {"connect"}, "errno": lambda p: {"econnrefused"},
                        "target": lambda p: {f"cache:{int(p['dep_port']) + 1}", str(int(p["dep_port"]) + 1)}},
    "slow-syscall": {"syscall": lambda p: {"openat", "open"}, "errno": lambda p: {"none", "blocks", "hangs"},
                     "target": lambda p: {"/var/spool/ledgerd/inbox"}},
}


@check
def http_ok(ctx: Context, *, host: str, port: int, path: str = "/", source: str = "probe",
            status: int = 200) -> Verdict:
    """``http://host:port/path`` answers ``status`` seen from ``source``."""
    answer = http_get(ctx.observe(source), f"http://{ctx.address(host)}:{port}{path}")
    if answer.get("status") != status:
        return fail(f"from {source}: {host}:{port}{path} answers {answer.get('status') or answer.get('error')}, "
                    f"not {status} - the service is not healthy yet")
    return ok(f"{host}:{port}{path} answers {status}")


@check
def runs_as(ctx: Context, *, host: str, command: str, uid: int) -> Verdict:
    """Processes running ``command`` (their argv[0]: a path, or a bare name) on ``host`` all run as ``uid``."""

    def runs(args: str) -> bool:
        argv0 = args.split(" ", 1)[0]
        return argv0 == command or ("/" not in command and argv0.rsplit("/", 1)[-1] == command)

    procs = [p for p in ctx.processes(host) if runs(p.args)]
    if not procs:
        return fail(f"{host}: no {command} process is running")
    wrong = sorted({p.uid for p in procs if p.uid != uid})
    if wrong:
        return fail(f"{host}: {command} runs as uid {', '.join(map(str, wrong))}, not {uid} - do not run it as root")
    return ok(f"{host}: {command} runs as uid {uid}")


def _norm(value: object) -> str:
    return " ".join(str(value).split()).strip().lower()


@check
def answer_is(ctx: Context, *, answer: str, param: str, expected: dict[str, str | list[str]]) -> Verdict:
    """The named answer matches what the seeded ``param`` implies (any of several accepted spellings)."""
    if answer not in ctx.answers:
        return fail(f"no answer {answer!r} recorded - call lab.answer({answer!r}, ...) in the notebook")
    seeded = str(ctx.params[param])
    accepted = expected.get(seeded)
    if accepted is None:
        raise KeyError(f"lab.yaml gives no expected {answer} for {param}={seeded}")
    options = [accepted] if isinstance(accepted, str) else accepted
    if _norm(ctx.answers[answer]) in {_norm(o) for o in options}:
        return ok(f"answer {answer!r} is right")
    return fail(f"answer {answer!r} ({ctx.answers[answer]!r}) does not match what the trace shows")


@check
def diagnosis(ctx: Context, *, part: str, answer: str, fault_param: str = "fault") -> Verdict:
    """The learner's named answer for one ``part`` of the diagnosis (syscall, target, errno) fits the
    injected fault. A connect target may be given as ``host:port`` or the port; feedback never tells."""
    if answer not in ctx.answers:
        return fail(f"no answer {answer!r} recorded - call lab.answer({answer!r}, ...) in the notebook")
    fault = str(ctx.params[fault_param])
    accepted = FAULTS[fault][part](dict(ctx.params))
    given = _norm(ctx.answers[answer])
    if part == "target" and fault == "dependency-port":  # "cache:7586", "172.18.0.3:7586" or "7586"
        given = given.rsplit(":", 1)[-1]
        accepted = {a.rsplit(":", 1)[-1] for a in accepted}
    if given in accepted:
        return ok(f"the {part} is right")
    return fail(f"answer {answer!r} ({ctx.answers[answer]!r}) is not the {part} the trace shows")


def not_serving(ctx: Context, host: str, port: int | None, path: str, what: str) -> Verdict | None:
    """A failed verdict when ``host:port`` is not healthy: *how* a service runs counts only once it runs."""
    if port is None:
        return None
    verdict = http_ok(ctx, host=host, port=port, path=path)
    if verdict.passed:
        return None
    return fail(f"{host}:{port} is not serving yet, so {what} cannot count")


@check
def runs_as_user(ctx: Context, *, host: str, command: str, user: str, serving_port: int | None = None,
                 serving_path: str = "/") -> Verdict:
    """A ``command`` process runs on ``host`` as ``user`` (whose uid is read from the host's image);
    with ``serving_port``, only once the service answers there."""
    if (verdict := not_serving(ctx, host, serving_port, serving_path, f"who runs {command}")) is not None:
        return verdict
    result = ctx.tools(host).run("id -u %s", user, timeout=20)
    if result.failed or not result.stdout.strip().isdigit():
        raise RuntimeError(f"the image of {host} has no user {user}")
    return runs_as(ctx, host=host, command=command, uid=int(result.stdout.strip()))


@check
def binary_unchanged(ctx: Context, *, host: str, path: str, serving_port: int | None = None,
                     serving_path: str = "/") -> Verdict:
    """``path`` on ``host`` is byte for byte the file the image shipped (fix the environment, not the
    program); with ``serving_port``, only once the service answers there."""
    if (verdict := not_serving(ctx, host, serving_port, serving_path, f"an unchanged {path}")) is not None:
        return verdict
    live = ctx.read_file(host, path)
    if live is None:
        return fail(f"{host}: {path} is gone")
    result = ctx.tools(host).run("sha256sum -- %s", path, timeout=20)
    if result.failed:
        raise RuntimeError(f"cannot hash {path} in the image of {host}: {result.stderr.strip()[:200]}")
    if hashlib.sha256(live).hexdigest() != result.stdout.split()[0]:
        return fail(f"{host}: {path} differs from the shipped binary - fix what it needs, not the program")
    return ok(f"{host}: {path} is the shipped binary")
