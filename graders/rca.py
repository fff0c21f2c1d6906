"""Incident write-up checks (comm-4-incident-rca): the RCA's front matter against the seeded truth.

The learner records the front matter of their RCA as a named answer (``lab.answer("rca", <YAML text>)``),
data that crosses from the sandbox; the truth comes from the learner's secret parameters alone, through the
same model that rendered the environment's logs and metrics at setup
(``environments/incident/images/replay/incident.py``, course-side, never a host's copy). No check reads a
host: the incident is history, and a host's files are the learner's.

The front matter (YAML)::

    start: 2026-10-07T03:12:40Z        # the first failed order (UTC)
    detected: ...                       # the page: the availability alert fired
    mitigated: ...                      # the change that stopped the storm took effect
    end: ...                            # the last failed order
    clock_skew: {host: orders, seconds: 300}   # whose clock was off, by how much (ahead: positive)
    trigger: dependency-slowdown        # from TRIGGERS
    mechanisms: [retry-amplification, ...]     # from MECHANISMS
    impact: {failed_orders: 1234}
    action_items:
    - {action: "...", mechanism: retry-amplification, owner: orders-team}

Feedback says which field is wrong and how (too early, too late, missing), never the expected value.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import sys
import threading
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

from ladderlab.grading.checks import Context, Verdict, check, fail, ok

MODEL = Path(__file__).resolve().parent.parent / "environments" / "incident" / "images" / "replay" / "incident.py"
TIME_FIELDS = ("start", "detected", "mitigated", "end")
TIME_TOLERANCE = 60  # seconds either side of the truth
SKEW_TOLERANCE = 20
IMPACT_TOLERANCE = 0.10
MIN_ACTION_WORDS = 3
MAX_RCA_BYTES = 10_000


_MODEL: list[ModuleType] = []
_LOCK = threading.Lock()


def model() -> ModuleType:
    """The incident model (loaded once, under a private name: it is course data, not a graders module). Checks of
    several gradings run in threads at once: one loads it, the others wait until it is complete."""
    with _LOCK:
        if not _MODEL:
            name = "_ladderlab_incident_model"
            spec = importlib.util.spec_from_file_location(name, MODEL)
            if spec is None or spec.loader is None:
                raise RuntimeError(f"cannot load the incident model {MODEL}")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # dataclasses look their module up while it executes
            spec.loader.exec_module(module)
            _MODEL.append(module)
        return _MODEL[0]


_TRUTHS: dict[str, Any] = {}


def truth(params: Mapping[str, str | int]) -> Any:
    """The seeded incident (``incident.Incident``) of a learner's parameters (kept: its requests take a moment)."""
    key = json.dumps(sorted((k, str(v)) for k, v in params.items()))
    incident_class = model().Incident
    with _LOCK:
        if key not in _TRUTHS:
            if len(_TRUTHS) >= 64:
                _TRUTHS.clear()
            _TRUTHS[key] = incident_class(dict(params))
        return _TRUTHS[key]


class Invalid(Exception):
    """The front matter cannot be read as the instructions ask; the message says why (the learner's fault)."""


def front_matter(ctx: Context, answer: str) -> dict[str, Any]:
    if answer not in ctx.answers:
        raise Invalid(f"no answer {answer!r} recorded - call lab.answer({answer!r}, front_matter) in the notebook")
    text = ctx.answers[answer]
    if not isinstance(text, str):
        raise Invalid(f"answer {answer!r} must be the front matter's YAML text")
    if len(text.encode()) > MAX_RCA_BYTES:
        raise Invalid(f"answer {answer!r} is longer than {MAX_RCA_BYTES} bytes")
    body = text.strip()
    if body.startswith("---"):
        body = body[3:]
        body = body.split("\n---", 1)[0]
    try:
        data = yaml.safe_load(body)
    except yaml.YAMLError as exc:
        raise Invalid(f"answer {answer!r} is not YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise Invalid(f"answer {answer!r} must be a YAML mapping of the front matter's fields")
    return data


def parse_time(value: Any, field: str) -> float:
    """Epoch seconds of an ISO 8601 time (a string or YAML's own timestamp); naive times are UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise Invalid(f"{field}: {value!r} is not an ISO 8601 time like 2026-10-07T03:12:40Z") from None
    else:
        raise Invalid(f"{field}: give an ISO 8601 time like 2026-10-07T03:12:40Z")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.timestamp()


def _judge(ctx: Context, answer: str, judge: Any) -> Verdict:
    try:
        result: Verdict = judge(front_matter(ctx, answer), truth(ctx.params))
    except Invalid as exc:
        return fail(str(exc))
    return result


def _norm(value: Any) -> str:
    return str(value).strip().lower()


@check
def timeline(ctx: Context, *, answer: str = "rca") -> Verdict:
    """start, detected, mitigated and end each within 60 s of the truth (true time, the skewed clock corrected)."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        wrong = []
        for field in TIME_FIELDS:
            if field not in fm:
                return fail(f"the front matter has no {field!r} time")
            given = parse_time(fm[field], field)
            off = given - getattr(inc, field)
            if abs(off) > TIME_TOLERANCE:
                wrong.append(f"{field} is more than {TIME_TOLERANCE} s too {'late' if off > 0 else 'early'}")
        if wrong:
            return fail("; ".join(wrong) + " (times are UTC, in true time: was every clock right?)")
        return ok(f"the timeline is right within {TIME_TOLERANCE} s (start, detection, mitigation, end)")

    return _judge(ctx, answer, judge)


@check
def clock_skew(ctx: Context, *, answer: str = "rca") -> Verdict:
    """clock_skew names the host whose clock was off and by how many seconds (ahead: positive), within 20 s."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        skew = fm.get("clock_skew")
        if not isinstance(skew, dict) or "host" not in skew or "seconds" not in skew:
            return fail("the front matter needs clock_skew: {host: ..., seconds: ...}")
        if _norm(skew["host"]) != inc.skewed_host:
            return fail(f"clock_skew.host {skew['host']!r} is not the host whose clock was off")
        try:
            seconds = float(skew["seconds"])
        except (TypeError, ValueError):
            return fail(f"clock_skew.seconds {skew['seconds']!r} is not a number")
        if abs(seconds - inc.skew) > SKEW_TOLERANCE:
            return fail(f"clock_skew.seconds is more than {SKEW_TOLERANCE} s off (is the sign right? "
                        f"positive means the host's clock was ahead of true time)")
        return ok(f"the skewed clock is found: {inc.skewed_host}, within {SKEW_TOLERANCE} s")

    return _judge(ctx, answer, judge)


@check
def trigger(ctx: Context, *, answer: str = "rca") -> Verdict:
    """trigger is the event that set the incident off, from the closed vocabulary."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        given = _norm(fm.get("trigger", ""))
        if given not in model().TRIGGERS:
            return fail(f"trigger {fm.get('trigger')!r} is not one of {', '.join(model().TRIGGERS)}")
        if given != inc.trigger:
            return fail(f"trigger {given!r} is not what set this incident off (a symptom, or another event?)")
        return ok("the trigger is right")

    return _judge(ctx, answer, judge)


@check
def mechanisms(ctx: Context, *, answer: str = "rca") -> Verdict:
    """mechanisms are exactly the mechanisms that made the incident worse or longer, from the vocabulary."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        given = fm.get("mechanisms")
        if not isinstance(given, list) or not given:
            return fail("mechanisms must be a list of mechanism names")
        names = {_norm(m) for m in given}
        unknown = sorted(names - set(model().MECHANISMS))
        if unknown:
            return fail(f"mechanisms {', '.join(unknown)} are not in the vocabulary ({', '.join(model().MECHANISMS)})")
        extra, missing = names - inc.mechanisms, inc.mechanisms - names
        if extra or missing:
            what = [f"{len(extra)} of them played no part" if extra else "",
                    f"{len(missing)} mechanism(s) that played a part are missing" if missing else ""]
            return fail(f"the mechanisms are not this incident's: {'; '.join(w for w in what if w)}")
        return ok(f"the {len(names)} mechanisms are right")

    return _judge(ctx, answer, judge)


@check
def impact(ctx: Context, *, answer: str = "rca") -> Verdict:
    """impact.failed_orders within 10% of the orders that failed between start and end."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        imp = fm.get("impact")
        value = imp.get("failed_orders") if isinstance(imp, dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return fail("the front matter needs impact: {failed_orders: <a number>}")
        true = inc.failed_orders
        if abs(value - true) > IMPACT_TOLERANCE * true:
            return fail(f"impact.failed_orders is more than {IMPACT_TOLERANCE:.0%} too "
                        f"{'high' if value > true else 'low'} (every order the edge did not answer 200 counts)")
        return ok(f"the impact is right within {IMPACT_TOLERANCE:.0%}")

    return _judge(ctx, answer, judge)


@check
def action_items(ctx: Context, *, answer: str = "rca") -> Verdict:
    """Every action item names a mechanism that played a part in this incident, and every mechanism the
    front matter lists has at least one action item."""

    def judge(fm: dict[str, Any], inc: Any) -> Verdict:
        items = fm.get("action_items")
        if not isinstance(items, list) or not items:
            return fail("action_items must be a list of {action: ..., mechanism: ...}")
        covered: set[str] = set()
        for n, item in enumerate(items, 1):
            if not isinstance(item, dict) or not isinstance(item.get("action"), str):
                return fail(f"action item {n} needs an action (text) and a mechanism")
            if len(item["action"].split()) < MIN_ACTION_WORDS:
                return fail(f"action item {n}: say what will be done in at least {MIN_ACTION_WORDS} words")
            mech = _norm(item.get("mechanism", ""))
            if mech not in inc.mechanisms:
                return fail(f"action item {n} ({item['action'][:60]!r}) is tied to {mech or 'no mechanism'!r}, "
                            f"which played no part in this incident")
            covered.add(mech)
        listed = fm.get("mechanisms")
        listed_set = {_norm(m) for m in listed} if isinstance(listed, list) else set()
        bare = sorted(listed_set - covered)
        if bare:
            return fail(f"mechanisms without an action item: {', '.join(bare)}")
        return ok(f"{len(items)} action items, each tied to a mechanism of this incident, every listed one covered")

    return _judge(ctx, answer, judge)
