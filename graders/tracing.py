"""Debugging checks (strace labs): the service's behaviour seen from the probe, its
processes as the engine lists them, and the learner's named answers compared
with the fault the seed injected."""

from __future__ import annotations

from graders._net import http_get
from ladderlab.grading.checks import Context, Verdict, check, fail, ok


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
    """A process whose command line contains ``command`` runs on ``host`` as ``uid`` (never as root)."""
    procs = [p for p in ctx.processes(host) if command in p.args]
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
