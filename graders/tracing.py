"""Debugging checks (strace labs): the service's behaviour seen from the probe, the process behind its
port identified by trusted means, and the learner's named answers compared with the fault the seed
injected.

Which process serves a port is never judged from argv or process names (a learner can start anything
under any name): :meth:`~ladderlab.grading.checks.Context.listener` names the socket's owner, read from
/proc by an observer in the host's namespaces, with the sha256 of the executable the kernel runs for it;
that digest is compared with the image's own copy of the binary (``ctx.tools``), and the uid comes from
the process's status, not from ``ps``.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable

from graders._net import http_get
from ladderlab.grading.checks import CannotJudge, Context, Listener, Verdict, check, fail, ok

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


_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def image_digest(ctx: Context, host: str, path: str) -> str:
    """sha256 of ``path`` as ``host``'s image ships it (hashed in a container of the image, not the host)."""

    def compute() -> str:
        result = ctx.tools(host).run("sha256sum -- %s", path, timeout=20)
        digest = result.stdout.split()[0] if result.stdout.split() else ""
        if result.failed or not _SHA256.fullmatch(digest):
            raise CannotJudge(f"cannot hash {path} in the image of {host}: {result.stderr.strip()[:200]}")
        return digest

    return ctx.cached(f"image-sha256:{host}:{path}", compute)


def image_uid(ctx: Context, host: str, user: str) -> int:
    """``user``'s uid in ``host``'s image (the learner may have edited the host's /etc/passwd)."""

    def compute() -> int:
        result = ctx.tools(host).run("id -u %s", user, timeout=20)
        if result.failed or not result.stdout.strip().isdigit():
            raise CannotJudge(f"the image of {host} has no user {user}")
        return int(result.stdout.strip())

    return ctx.cached(f"image-uid:{host}:{user}", compute)


def serving(ctx: Context, host: str, port: int, binary: str) -> Listener | Verdict:
    """The process behind ``host:port`` if it runs the image's ``binary``, else a failed verdict."""
    found = ctx.cached(f"listener:{host}:{port}", lambda: ctx.listener(host, port))
    if found is None:
        return fail(f"{host}: nothing listens on port {port} for other hosts")
    if found.uid < 0 or not found.exe_sha256:
        return fail(f"{host}:{port}: {found.exe} - only the shipped {binary} may serve it")
    if found.exe_sha256 != image_digest(ctx, host, binary):
        return fail(f"{host}:{port} is served by {found.exe!r}, not by the {binary} the image ships - "
                    f"fix what the service needs, do not replace it")
    return found


@check
def http_ok(ctx: Context, *, host: str, port: int, path: str = "/", source: str = "probe",
            status: int = 200, binary: str | None = None) -> Verdict:
    """``http://host:port/path`` answers ``status`` seen from ``source``; with ``binary``, the answer comes
    from the image's ``binary`` (the process behind the port runs it), not from a stand-in."""
    answer = http_get(ctx.observe(source), f"http://{ctx.address(host)}:{port}{path}")
    if answer.get("status") != status:
        return fail(f"from {source}: {host}:{port}{path} answers {answer.get('status') or answer.get('error')}, "
                    f"not {status} - the service is not healthy yet")
    if binary is not None and isinstance(found := serving(ctx, host, port, binary), Verdict):
        return found
    return ok(f"{host}:{port}{path} answers {status}" + (f" (from {binary})" if binary else ""))


@check
def runs_as(ctx: Context, *, host: str, port: int, uid: int, binary: str | None = None) -> Verdict:
    """The process serving ``host:port`` runs as ``uid`` (and, with ``binary``, runs the image's ``binary``)."""
    if binary is not None:
        found: Listener | Verdict | None = serving(ctx, host, port, binary)
    else:
        found = ctx.cached(f"listener:{host}:{port}", lambda: ctx.listener(host, port))
    if found is None:
        return fail(f"{host}: nothing listens on port {port} for other hosts")
    if isinstance(found, Verdict):
        return found
    if found.uid < 0:
        return fail(f"{host}:{port}: {found.exe}")
    if found.uid != uid:
        return fail(f"{host}: the process serving port {port} runs as uid {found.uid}, not {uid} - "
                    f"do not run it as root")
    return ok(f"{host}: the process serving port {port} runs as uid {uid}")


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
        host, _, port = given.rpartition(":")
        if host and host not in {"cache", ctx.address("cache")}:  # the port alone is fine; a wrong host is not
            return fail(f"answer {answer!r} ({ctx.answers[answer]!r}) is not the {part} the trace shows")
        given = port
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
def runs_as_user(ctx: Context, *, host: str, command: str, user: str, serving_port: int,
                 serving_path: str = "/") -> Verdict:
    """The image's ``command`` (a path in the image) serves ``serving_port`` on ``host`` as ``user`` (whose
    uid is read from the image), once the service answers there."""
    if (verdict := not_serving(ctx, host, serving_port, serving_path, f"who runs {command}")) is not None:
        return verdict
    return runs_as(ctx, host=host, port=serving_port, uid=image_uid(ctx, host, user), binary=command)


@check
def binary_unchanged(ctx: Context, *, host: str, path: str, serving_port: int | None = None,
                     serving_path: str = "/") -> Verdict:
    """``path`` on ``host`` is byte for byte the file the image shipped (fix the environment, not the
    program); with ``serving_port``, only once the service answers there, and the process serving it
    runs exactly that binary."""
    if (verdict := not_serving(ctx, host, serving_port, serving_path, f"an unchanged {path}")) is not None:
        return verdict
    live = ctx.read_file(host, path)
    if live is None:
        return fail(f"{host}: {path} is gone")
    if hashlib.sha256(live).hexdigest() != image_digest(ctx, host, path):
        return fail(f"{host}: {path} differs from the shipped binary - fix what it needs, not the program")
    if serving_port is not None and isinstance(found := serving(ctx, host, serving_port, path), Verdict):
        return found
    return ok(f"{host}: {path} is the shipped binary" + (f" and serves port {serving_port}" if serving_port else ""))


@check(disruptive=True)
def survives_restart(ctx: Context, *, hosts: list[str], host: str, port: int, path: str, command: str,
                     source: str = "probe", within: float = 30.0) -> Verdict:
    """The fix is in the environment's files, not in a process left running: once ``host:port/path`` is
    healthy, ``hosts`` are restarted (every process killed, their start-up run again), and within
    ``within`` seconds the image's ``command`` serves it again (who runs it is another check's)."""
    if (verdict := not_serving(ctx, host, port, path, "whether the fix outlives a restart")) is not None:
        return verdict
    ctx.restart(*hosts)
    url = f"http://{ctx.address(host)}:{port}{path}"
    end = time.monotonic() + within
    while (answer := http_get(ctx.observe(source), url)).get("status") != 200:
        if time.monotonic() > end:
            said = answer.get("status") or answer.get("error")
            return fail(f"after {' and '.join(hosts)} restarted, {host}:{port}{path} answered {said}, not 200, "
                        f"for {within:g} s: the fix did not outlive the processes running when it was made - "
                        f"put it in the files the service and its supervisor read at start")
        time.sleep(1.0)
    if isinstance(found := serving(ctx, host, port, command), Verdict):
        return fail(f"after {' and '.join(hosts)} restarted: {found.feedback}")
    return ok(f"after {' and '.join(hosts)} restarted, {host}:{port}{path} answers again from {command}")
