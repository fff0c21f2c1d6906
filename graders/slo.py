"""SLO and alerting checks (Prometheus): the learner's rule files, read through the
Docker API, validated and unit-tested with promtool from the Prometheus host's
*image* against series the lab defines (the learner never sees them); whether
the running Prometheus loaded a rule, asked over HTTP from the probe."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import yaml

from graders._net import control_free, http_get
from ladderlab.errors import CommandTimeout
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

RULES_DIR = "/etc/prometheus/rules"


def _stage_rules(ctx: Context, host: str, path: str) -> tuple[Runner, list[str]] | Verdict:
    files = {control_free(n, f"a rule file's name in {path}"): d for n, d in ctx.read_dir(host, path).items()
             if n.endswith((".yml", ".yaml"))}
    if not files:
        return fail(f"{host}: no rule files (*.yml) in {path}")
    tools = ctx.tools(host)
    # Checks run in parallel and share the tools container: each gets a directory of its own.
    workdir = f"/root/check-{secrets.token_hex(6)}"
    names = []
    for name, data in sorted(files.items()):
        tools.put_file(f"{workdir}/rules/{name}", data)
        names.append(f"{workdir}/rules/{name}")
    return tools, names


def _printable(text: str) -> str:
    """promtool's output with control characters (from the learner's rules, if any got through) neutralised."""
    return "".join(ch if ch.isprintable() or ch == "\n" else " " for ch in text)


def _first_problem(text: str) -> str:
    text = _printable(text)
    lines = [ln.strip() for ln in text.splitlines()
             if ln.strip() and not ln.startswith(("Checking", "Unit Testing")) and ln.strip() != "FAILED:"]
    bad = [ln for ln in lines if "FAILED" in ln or "error" in ln.lower() or "err" in ln.lower()]
    return (bad or lines or ["rejected"])[0][:200]


def promtool_failure(text: str) -> str:
    """One line from ``promtool test rules`` output: which alert, when, what was expected and what fired."""
    lines = [ln.strip() for ln in _printable(text).split("\n")]
    if "FAILED:" not in lines:
        return _first_problem(text)
    rest = lines[lines.index("FAILED:") + 1:]
    if "FAILED:" in rest:  # the first failure is enough
        rest = rest[:rest.index("FAILED:")]
    rest = [ln for ln in rest if not ln.startswith("Unit Testing")]
    head = next((ln.rstrip(", ") for ln in rest if ln.startswith("alertname:") or ln.startswith("expr:")), "")
    exp: list[str] = []
    got: list[str] = []
    target = None
    for ln in rest:
        if ln.startswith("Unit Testing"):
            break
        if ln.startswith(("exp:", "got:")):
            target = exp if ln.startswith("exp:") else got
            inline = ln[4:].strip().rstrip(",")
            if inline not in ("", "[", "[]", "nil"):  # a query's result, printed on the line itself
                target.append(inline)
        elif ln.startswith("Labels:") and target is not None:
            target.append(ln[len("Labels:"):])
    if not head:
        return _first_problem(text)
    return f"{head}: expected {' '.join(exp) or 'nothing'}, got {' '.join(got) or 'nothing'}"[:280]


@check
def rules_valid(ctx: Context, *, host: str = "prometheus", path: str = RULES_DIR) -> Verdict:
    """Every rule file in ``path`` passes ``promtool check rules``."""
    staged = _stage_rules(ctx, host, path)
    if isinstance(staged, Verdict):
        return staged
    tools, names = staged
    try:
        result = tools.run("promtool check rules " + " ".join(["%s"] * len(names)), *names, timeout=60)
    except CommandTimeout:  # the image's tool on the learner's rules: honest rules check in a second
        return fail(f"{host}: promtool did not finish checking the rules within 60 s")
    if result.failed:
        return fail(f"{host}: promtool rejects the rules: {_first_problem(result.stdout + result.stderr)}")
    return ok(f"{host}: {len(names)} rule file(s) pass promtool check rules")


@check
def alert_behaves(ctx: Context, *, alert: str, tests: list[dict[str, Any]], host: str = "prometheus",
                  path: str = RULES_DIR, evaluation_interval: str = "1m") -> Verdict:
    """Alert ``alert`` fires exactly as ``tests`` (promtool unit tests over the lab's series) expect."""
    staged = _stage_rules(ctx, host, path)
    if isinstance(staged, Verdict):
        return staged
    tools, names = staged
    suite = {"rule_files": names, "evaluation_interval": evaluation_interval, "tests": tests}
    suite_path = names[0].rsplit("/rules/", 1)[0] + "/tests.yml"
    tools.put_file(suite_path, yaml.safe_dump(suite).encode())
    try:
        result = tools.run("promtool test rules %s", suite_path, timeout=120)
    except CommandTimeout:
        return fail(f"alert {alert}: promtool did not finish the scenarios within 120 s - simplify the rules")
    if result.failed:
        return fail(f"alert {alert} does not behave as required: {promtool_failure(result.stdout + result.stderr)}")
    return ok(f"alert {alert} fires when it should and stays quiet when it should not ({len(tests)} scenarios)")


def _rules_api(runner: Runner, address: str, port: int, host: str) -> list[dict[str, Any]] | Verdict:
    """The rules the running Prometheus evaluates (its JSON API: structured, names compared exactly), or a
    failed verdict when it does not answer with one (the learner runs that Prometheus)."""
    answer = http_get(runner, f"http://{address}:{port}/api/v1/rules")
    try:
        data = json.loads(str(answer.get("body", "")))
        rules = [r for g in data["data"]["groups"] for r in g["rules"]]
        if not all(isinstance(r, dict) for r in rules):
            raise TypeError("a rule is not an object")
        return rules
    except (ValueError, KeyError, TypeError):
        return fail(f"{host}: Prometheus answered {answer.get('status') or answer.get('error')} without a rules "
                    f"list on :{port}/api/v1/rules - is it running?")


def _alert_names(rules: list[dict[str, Any]]) -> list[str]:
    """Names of alerting rules (only strings count; feedback neutralises control characters)."""
    return [r["name"] for r in rules if r.get("type") == "alerting" and isinstance(r.get("name"), str)]


@check
def alert_loaded(ctx: Context, *, alert: str, host: str = "prometheus", port: int = 9090,
                 source: str = "probe") -> Verdict:
    """The running Prometheus has loaded alerting rule ``alert`` (reload after editing rule files)."""
    rules = _rules_api(ctx.observe(source), ctx.address(host), port, host)
    if isinstance(rules, Verdict):
        return rules
    names = _alert_names(rules)
    if alert not in names:
        return fail(f"{host}: Prometheus has not loaded alert {alert} (loaded: {', '.join(map(str, names)) or 'none'})"
                    f" - reload it (POST /-/reload)")
    return ok(f"{host}: Prometheus evaluates alert {alert}")


# --- scenarios the grader writes (the learner never sees them) -------------------------------------
#
# A scenario is a set of input series and the expectations promtool checks on them at given minutes.
# Each expectation carries the sentence the learner reads when it fails, so feedback states what the
# scenario was, what was expected and what fired, in one line, without the series themselves.

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LABELS = 'job="checkout",instance="app:8080",handler="checkout"'
PER_MINUTE = 6000  # requests per minute before a scenario's condition begins (100/s)
START = 10  # minute at which a golden-signal scenario's condition begins
Phases = list[tuple[int, float]]  # (from minute, value), in order


@dataclass(frozen=True)
class Expect:
    """What promtool must find at minute ``at``: ``samples`` ((labels, value) pairs; none = an empty result)."""

    expr: str
    at: int
    samples: tuple[tuple[str, float], ...]
    expected: str  # what the learner reads, e.g. "CheckoutHighLatency firing with severity page"


@dataclass(frozen=True)
class Scenario:
    story: str  # e.g. "a 6-minute spike just over your threshold"
    series: list[dict[str, str]]
    expects: list[Expect]


def firing(alert: str, at: int, severity: str | None) -> Expect:
    """``alert`` is firing with ``severity`` at minute ``at`` (``severity=None``: it is not firing at all).
    The query lists the severities the alert fires with, so a failure shows what fired."""
    expr = f'clamp_max(count by (severity) (ALERTS{{alertname="{alert}",alertstate="firing"}}), 1)'
    if severity is None:
        return Expect(expr, at, (), f"{alert} not firing")
    return Expect(expr, at, ((f'{{severity="{severity}"}}', 1),), f"{alert} firing with severity {severity}")


def equals(name: str, reference: str, at: int, expected: str) -> Expect:
    """Recording rule ``name`` equals the PromQL ``reference`` at minute ``at`` (relative error below 1e-6).
    The query returns the recorded value only when it is wrong (-1 when nothing is recorded), so a failure
    shows it."""
    expr = (f"(sum({name}) or vector(-1)) unless on() "
            f"(abs(sum({name}) / ({reference}) - 1) < 1e-6)")
    return Expect(expr, at, (), f"{name} = {expected}")


def _at(phases: Phases, minute: int) -> float:
    return next(value for start, value in reversed(phases) if minute >= start)


def _counter(per_minute: Callable[[int], float], minutes: int) -> str:
    """promtool series values (one a minute) of a counter that grows by ``per_minute(m)`` during minute m."""
    values, total = [], 0.0
    for minute in range(minutes + 1):
        values.append(f"{total:.12g}")
        total += per_minute(minute)
    return " ".join(values)


def requests(minutes: int, rate: Phases, errors: Phases, client_errors: float = 0.0,
             labels: str = LABELS) -> list[dict[str, str]]:
    """``http_requests_total`` by code: ``rate`` requests a minute, a share ``errors`` of them 5xx and a share
    ``client_errors`` 4xx (not failures of the service), the rest 200."""
    def share(code: str) -> Callable[[int], float]:
        def per_minute(m: int) -> float:
            e = _at(errors, m)
            return _at(rate, m) * {"500": e, "404": client_errors, "200": 1 - e - client_errors}[code]
        return per_minute

    codes = ["200", "500"] + (["404"] if client_errors else [])
    return [{"series": f'http_requests_total{{{labels},code="{c}"}}', "values": _counter(share(c), minutes)}
            for c in codes]


def latency(minutes: int, slow: list[tuple[int, dict[float, float]]]) -> list[dict[str, str]]:
    """Histogram buckets at PER_MINUTE requests: from each phase's minute, the given shares of requests take
    the given seconds; all others take 40 ms."""
    def per_minute(le: float) -> Callable[[int], float]:
        def count(m: int) -> float:
            shares = next(s for start, s in reversed(slow) if m >= start)
            fast = 1 - sum(shares.values())
            return PER_MINUTE * (fast * (le >= 0.04) + sum(sh for sec, sh in shares.items() if le >= sec))
        return count

    series = []
    for le in [*BUCKETS, float("inf")]:
        label = "+Inf" if le == float("inf") else f"{le:g}"
        series.append({"series": f'http_request_duration_seconds_bucket{{{LABELS},le="{label}"}}',
                       "values": _counter(per_minute(le), minutes)})
    return series


def gauge(name: str, phases: Phases, minutes: int) -> dict[str, str]:
    return {"series": f"{name}{{{LABELS}}}", "values": " ".join(f"{_at(phases, m):g}" for m in range(minutes + 1))}


#: First minute at which a correct golden-signal rule (5-minute window) is pending in the "over the threshold
#: from minute 10" scenario. The expectations allow one evaluation of lag (alert and recording rules in
#: different groups) and catch a ``for`` of 3m or less and of 7m or more.
GOLDEN_ONSET = {"latency": 14, "errors": 14, "traffic": 15, "saturation": 10}


def golden_scenarios(signal: str, threshold: float, alert: str, severity: str) -> list[Scenario]:
    """Scenarios for one golden-signal alert: the signal crosses the learner's threshold at minute 10 (pending
    at first because of ``for: 5m``, firing with ``severity`` soon after); a near miss on the other side of it,
    with what must not count (4xx answers, the rarest slow requests, failed requests for traffic, another
    capacity); and a 6-minute spike over the threshold, which a 5-minute window and ``for: 5m`` sit out."""
    minutes, end = 30, START + 6
    if signal == "errors":  # threshold in percent of requests answered 5xx
        t = threshold / 100
        fire = requests(minutes, [(0, PER_MINUTE)], [(0, 0.0), (START, 1.5 * t)])
        near = requests(minutes, [(0, PER_MINUTE)], [(0, 0.0), (START, 0.7 * t)], client_errors=2 * t)
        spike = requests(minutes, [(0, PER_MINUTE)], [(0, 0.0), (START, 1.5 * t), (end, 0.0)])
        stories = ("5xx answers at 1.5x your threshold from minute 10",
                   "5xx answers at 0.7x your threshold, and 4xx answers (client errors) at 2x it",
                   "a 6-minute spike of 5xx answers at 1.5x your threshold")
    elif signal == "traffic":  # threshold in requests per second: alert below it
        low, near_rate = 0.7 * threshold * 60, 1.5 * threshold * 60
        fire = requests(minutes, [(0, PER_MINUTE), (START, low)], [(0, 0.0)])
        near = requests(minutes, [(0, PER_MINUTE), (START, near_rate)], [(0, 0.0), (START, 0.4)])
        spike = requests(minutes, [(0, PER_MINUTE), (START, 0.5 * threshold * 60), (end, PER_MINUTE)], [(0, 0.0)])
        stories = ("traffic down to 0.7x your threshold from minute 10",
                   "traffic at 1.5x your threshold, 40% of it answered 5xx (failed requests are requests too)",
                   "a 6-minute dip of traffic to 0.5x your threshold")
    elif signal == "latency":  # threshold in milliseconds for the 99th percentile
        seconds = threshold / 1000
        i = BUCKETS.index(seconds)
        above, below = (BUCKETS[i] + BUCKETS[i + 1]) / 2, (BUCKETS[i - 1] + BUCKETS[i]) / 2
        fire = latency(minutes, [(0, {}), (START, {above: 0.015})])  # p99 in (threshold, next bucket]; p98 fast
        near = latency(minutes, [(0, {}), (START, {below: 0.015, 10.0: 0.007})])  # p99 under it; p99.5 far over
        spike = latency(minutes, [(0, {}), (START, {above: 0.015}), (end, {})])
        stories = ("1.5% of requests just slower than your threshold from minute 10",
                   "1.5% of requests just faster than your threshold and 0.7% of them very slow",
                   "a 6-minute spike of 1.5% of requests just slower than your threshold")
    elif signal == "saturation":  # threshold in percent of capacity in use
        def load(capacity: float, phases: Phases) -> list[dict[str, str]]:
            return [gauge("http_requests_in_flight", [(m, capacity * p / 100) for m, p in phases], minutes),
                    gauge("http_requests_capacity", [(0, capacity)], minutes)]
        fire = load(40, [(0, threshold - 20), (START, threshold + 10)])
        near = load(64, [(0, threshold - 20), (START, threshold - 10)])
        spike = load(40, [(0, threshold - 20), (START, threshold + 10), (START + 3, threshold - 20)])
        stories = ("in-flight requests at your threshold + 10 points of capacity from minute 10",
                   "in-flight requests at your threshold - 10 points, on a service with more capacity",
                   "a 3-minute spike of in-flight requests over your threshold")
    else:
        raise ValueError(f"unknown golden signal {signal!r}")
    onset = GOLDEN_ONSET[signal]
    return [
        Scenario(stories[0], fire, [firing(alert, onset + 3, None), firing(alert, onset + 6, severity),
                                    firing(alert, minutes - 5, severity)]),
        Scenario(stories[1], near, [firing(alert, m, None) for m in (START + 5, START + 10, minutes - 5)]),
        Scenario(stories[2], spike, [firing(alert, m, None) for m in range(START + 2, minutes)]),
    ]


def promtool_suite(scenarios: list[Scenario]) -> tuple[list[dict[str, Any]], dict[str, tuple[Scenario, Expect]]]:
    """promtool test groups, and which scenario and expectation each tagged query stands for (a PromQL
    comment makes every query's text unique, so promtool's report names the one that failed)."""
    groups: list[dict[str, Any]] = []
    tags: dict[str, tuple[Scenario, Expect]] = {}
    for scenario in scenarios:
        tests = []
        for expect in scenario.expects:
            tag = f"e{len(tags)}"
            tags[tag] = (scenario, expect)
            tests.append({"expr": f"{expect.expr} # {tag}", "eval_time": f"{expect.at}m",
                          "exp_samples": [{"labels": lb, "value": v} for lb, v in expect.samples]})
        groups.append({"interval": "1m", "input_series": scenario.series, "promql_expr_test": tests})
    return groups, tags


_FAILED_QUERY = re.compile(r'^expr: ".*# (e\d+)", time: ')


def _got(line: str) -> str:
    """promtool's ``got:`` for one of our queries, as the learner reads it."""
    got = line.split(":", 1)[1].strip()
    if got in ("nil", "[]", ""):
        return "nothing"
    severities = re.findall(r'severity="([^"]*)"', got)
    if severities:
        return "firing with severity " + " and ".join(severities)
    if got.startswith("{}") and "firing" not in got:
        value = got[2:].strip().split(",")[0]
        try:
            number = float(value)
        except ValueError:
            return got[:80]
        return "nothing recorded" if number == -1 else f"{number:.6g}"
    return got[:80]


def scenario_failure(text: str, tags: dict[str, tuple[Scenario, Expect]]) -> str:
    """One line from ``promtool test rules`` output over our tagged scenarios: the scenario, the minute,
    what was expected and what fired (or was recorded)."""
    lines = [ln.strip() for ln in _printable(text).split("\n")]
    for i, ln in enumerate(lines):
        found = _FAILED_QUERY.match(ln)
        if not found or found.group(1) not in tags:
            continue
        scenario, expect = tags[found.group(1)]
        got_line = next((x for x in lines[i + 1:i + 4] if x.startswith("got:")), "got: ?")
        got = _got(got_line)
        if expect.samples == () and expect.expected.endswith("not firing") and got == "nothing":
            got = "firing"  # cannot happen with our queries; kept honest if promtool's format changes
        if got == "nothing" and "firing" in expect.expected:
            got = "not firing"
        return f"{scenario.story}: at minute {expect.at} expected {expect.expected}, got {got}"[:300]
    return promtool_failure(text)


def scenarios_behave(ctx: Context, *, scenarios: list[Scenario], what: str, host: str = "prometheus",
                     path: str = RULES_DIR) -> Verdict:
    """The learner's rules pass every expectation of ``scenarios`` (promtool unit tests from the image)."""
    staged = _stage_rules(ctx, host, path)
    if isinstance(staged, Verdict):
        return staged
    tools, names = staged
    groups, tags = promtool_suite(scenarios)
    suite = {"rule_files": names, "evaluation_interval": "1m", "tests": groups}
    suite_path = names[0].rsplit("/rules/", 1)[0] + "/tests.yml"
    tools.put_file(suite_path, yaml.safe_dump(suite).encode())
    try:
        result = tools.run("promtool test rules %s", suite_path, timeout=120)
    except CommandTimeout:
        return fail(f"{what}: promtool did not finish the scenarios within 120 s - simplify the rules")
    if result.failed:
        return fail(f"{what}: no - {scenario_failure(result.stdout + result.stderr, tags)}")
    return ok(f"{what} ({len(scenarios)} scenarios)")


@check
def golden_signal_alert(ctx: Context, *, alert: str, signal: str, threshold: float | str, severity: str,
                        host: str = "prometheus", path: str = RULES_DIR) -> Verdict:
    """Alert ``alert`` on ``signal`` fires past the learner's ``threshold`` (after its ``for``), with
    ``severity``, and stays silent on a near miss and a short spike."""
    scenarios = golden_scenarios(signal, float(threshold), alert, severity)
    return scenarios_behave(ctx, scenarios=scenarios, host=host, path=path,
                            what=f"{alert} ({signal}, threshold {threshold}) fires after its for:, with severity "
                                 f"{severity}, and stays quiet on a near miss and a short spike")


@check
def alerts_loaded(ctx: Context, *, alerts: list[str], host: str = "prometheus", port: int = 9090,
                  source: str = "probe") -> Verdict:
    """The running Prometheus has loaded every alerting rule in ``alerts``."""
    rules = _rules_api(ctx.observe(source), ctx.address(host), port, host)
    if isinstance(rules, Verdict):
        return rules
    loaded = set(_alert_names(rules))
    missing = [a for a in alerts if a not in loaded]
    if missing:
        return fail(f"{host}: Prometheus has not loaded {', '.join(missing)} - put the rules in "
                    f"/etc/prometheus/rules/*.yml and reload (POST /-/reload)")
    return ok(f"{host}: Prometheus evaluates {', '.join(alerts)}")


# --- multi-window, multi-burn-rate SLO alerts ---------------------------------------------------

RECORDING = {"5m": "slo:checkout_errors:ratio_rate5m", "30m": "slo:checkout_errors:ratio_rate30m",
             "1h": "slo:checkout_errors:ratio_rate1h", "6h": "slo:checkout_errors:ratio_rate6h"}
#: First minute at which a correct fast-burn page (1h and 5m windows over 14.4x) is pending in the 30x burn
#: from minute 60, and a correct slow-burn ticket (6h and 30m over 6x) in the 8x burn from minute 60.
FAST_ONSET, SLOW_ONSET = 89, 240


def _burn(phases: Phases, budget: float, minutes: int) -> list[dict[str, str]]:
    """Requests at PER_MINUTE whose 5xx share burns the budget at the phases' rates (multiples of it)."""
    return requests(minutes, [(0, PER_MINUTE)], [(m, min(1.0, x * budget)) for m, x in phases])


def _reference(window: str, job: str = "checkout") -> str:
    return (f'sum(rate(http_requests_total{{job="{job}",code=~"5.."}}[{window}])) / '
            f'sum(rate(http_requests_total{{job="{job}"}}[{window}]))')


def burn_rate_scenarios(part: str, target: float, page: str, ticket: str) -> list[Scenario]:
    """Scenarios for one property of burn-rate alerting at SLO ``target`` (percent); burn rates are multiples
    of the error budget (1 - target/100), so every seed gets the same story.

    recording: an error ratio that changes over 7 hours, with 4xx answers and another job's requests that do
               not count: each recording rule equals the 5xx share of job checkout over its own window.
    fast:   a 30x burn pages within minutes of the 1-hour window crossing 14.4x (after for: 2m, not before);
            a burn just over 14.4x pages; a 12x burn does not; a 10-minute spike at 50x does not (1-hour window).
    reset:  the page clears within minutes once a 50x burst stops (5-minute window), and the ticket within
            the hour once a long 10x burn stops (30-minute window).
    slow:   an 8x burn opens a ticket after for: 15m (not before, not an hour late) and never pages; a 5x
            burn opens none.
    quiet:  half the budget burns all along: nothing fires.
    """
    budget = 1 - target / 100
    if part == "recording":
        phases: Phases = [(0, 0.01), (200, 0.02), (375, 0.04), (405, 0.08)]
        ours = requests(420, [(0, PER_MINUTE)], phases, client_errors=0.02)
        other = requests(420, [(0, 600)], [(0, 0.5)], labels='job="canary",instance="canary:8080",handler="checkout"')
        expects = [equals(name, _reference(w), 420, f"the 5xx share of job checkout's requests over {w}")
                   for w, name in RECORDING.items()]
        return [Scenario("an error ratio that changes over 7 hours, with 4xx answers and a second job", ours + other,
                         expects)]
    if part == "fast":
        return [
            Scenario("a 30x burn from minute 60", _burn([(0, 0), (60, 30)], budget, 130),
                     [firing(page, FAST_ONSET + 1, None), firing(page, FAST_ONSET + 4, "page"),
                      firing(page, 125, "page")]),
            Scenario("a 16x burn from minute 60", _burn([(0, 0), (60, 16)], budget, 150),
                     [firing(page, 145, "page")]),
            Scenario("a 12x burn from minute 60", _burn([(0, 0), (60, 12)], budget, 180),
                     [firing(page, m, None) for m in (90, 120, 150, 180)]),
            Scenario("a 10-minute spike at 50x at minute 60", _burn([(0, 0), (60, 50), (70, 0)], budget, 90),
                     [firing(page, m, None) for m in range(62, 90, 2)]),
        ]
    if part == "reset":
        return [
            Scenario("a 50x burn from minute 60 to 95", _burn([(0, 0), (60, 50), (95, 0)], budget, 120),
                     [firing(page, 90, "page"), firing(page, 105, None), firing(page, 115, None)]),
            Scenario("a 10x burn for 5 hours that then stops", _burn([(0, 10), (300, 0)], budget, 360),
                     [firing(ticket, 290, "ticket"), firing(ticket, 345, None)]),
        ]
    if part == "slow":
        return [
            Scenario("an 8x burn from minute 60", _burn([(0, 0), (60, 8)], budget, 400),
                     [firing(ticket, SLOW_ONSET + 12, None), firing(ticket, SLOW_ONSET + 18, "ticket"),
                      firing(ticket, 390, "ticket"), *[firing(page, m, None) for m in (120, 240, 360, 390)]]),
            Scenario("a 5x burn all along", _burn([(0, 5)], budget, 400),
                     [firing(ticket, m, None) for m in (200, 300, 390)]),
        ]
    if part == "quiet":
        return [Scenario("half the error budget burning all along", _burn([(0, 0.5)], budget, 400),
                         [firing(ticket, 390, None), firing(page, 390, None), firing(page, 60, None)])]
    raise ValueError(f"unknown burn-rate property {part!r}")


@check
def burn_rate(ctx: Context, *, part: str, slo_target: float | str, page_alert: str, ticket_alert: str,
              host: str = "prometheus", path: str = RULES_DIR) -> Verdict:
    """One property of multi-window, multi-burn-rate alerting for the learner's SLO (percent)."""
    target = slo_target
    scenarios = burn_rate_scenarios(part, float(target), page_alert, ticket_alert)
    what = {"fast": f"{page_alert} pages on a fast burn, in time, and not on a near miss or a short spike",
            "reset": f"{page_alert} and {ticket_alert} clear soon after the burn stops",
            "slow": f"{ticket_alert} opens a ticket on a slow burn, in time, with no page, and not on a near miss",
            "quiet": "nothing fires while the error budget holds",
            "recording": f"the recording rules {', '.join(RECORDING.values())} give the 5xx ratio"}[part]
    return scenarios_behave(ctx, scenarios=scenarios, host=host, path=path, what=f"{what} (SLO {target}%)")
