"""SLO and alerting checks (Prometheus): the learner's rule files, read through the
Docker API, validated and unit-tested with promtool from the Prometheus host's
*image* against series the lab defines (the learner never sees them); whether
the running Prometheus loaded a rule, asked over HTTP from the probe."""

from __future__ import annotations

import json
import secrets
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
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Checking")]
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
        if ln.startswith("exp:"):
            target = exp
        elif ln.startswith("got:"):
            target = got
        elif ln.startswith("Labels:") and target is not None:
            target.append(ln[len("Labels:"):])
    if not head:
        return _first_problem(text)
    return f"{head}: expected {' '.join(exp) or 'no alert'}, got {' '.join(got) or 'no alert'}"[:280]


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

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LABELS = 'job="checkout",instance="app:8080",handler="checkout"'
PER_MINUTE = 6000  # requests per minute in every scenario (100/s)
START = 10  # minute at which a scenario's condition begins


def _counter(before: float, after: float, minutes: int) -> str:
    """promtool series values: a counter growing by ``before`` per minute, then by ``after`` from START on."""
    values, total = [], 0.0
    for minute in range(minutes + 1):
        values.append(f"{total:g}")
        total += before if minute < START else after
    return " ".join(values)


def _gauge(before: float, after: float, minutes: int) -> str:
    return " ".join(f"{before if m < START else after:g}" for m in range(minutes + 1))


def _firing(alert: str, severity: str) -> str:
    return f'count(ALERTS{{alertname="{alert}",alertstate="firing",severity="{severity}"}}) or vector(0)'


def _expect(alert: str, severity: str, at: str, firing: bool) -> dict[str, Any]:
    return {"expr": _firing(alert, severity), "eval_time": at, "exp_samples": [{"labels": "{}", "value": int(firing)}]}


def _traffic_series(total_rate: tuple[float, float], error_ratio: tuple[float, float],
                    minutes: int) -> list[dict[str, str]]:
    """Request counters: ``total_rate`` per minute before and after START, ``error_ratio`` of them 5xx."""
    (r0, r1), (e0, e1) = total_rate, error_ratio
    ok_series = f'http_requests_total{{{LABELS},code="200"}}'
    err_series = f'http_requests_total{{{LABELS},code="500"}}'
    return [{"series": ok_series, "values": _counter(r0 * (1 - e0), r1 * (1 - e1), minutes)},
            {"series": err_series, "values": _counter(r0 * e0, r1 * e1, minutes)}]


def _latency_series(slow_share: float, slow_seconds: float, minutes: int) -> list[dict[str, str]]:
    """Buckets where every request takes 40 ms before START, and ``slow_share`` take ``slow_seconds`` after."""
    series = []
    for le in [*BUCKETS, float("inf")]:
        fast = PER_MINUTE if le >= 0.04 else 0.0
        after = PER_MINUTE * (1 - slow_share) * (le >= 0.04) + PER_MINUTE * slow_share * (le >= slow_seconds)
        label = "+Inf" if le == float("inf") else f"{le:g}"
        series.append({"series": f'http_request_duration_seconds_bucket{{{LABELS},le="{label}"}}',
                       "values": _counter(fast, after, minutes)})
    return series


def golden_scenarios(signal: str, threshold: float, alert: str, severity: str) -> list[dict[str, Any]]:
    """Two promtool test groups for one golden-signal alert: the condition crosses the learner's seeded
    threshold at minute 10 (still pending a few minutes later because of ``for``, firing at 25m); and a near miss on the
    other side of it (silent at 25m). The near miss is chosen so a neighbour's threshold fails."""
    minutes = 30
    if signal == "errors":  # threshold in percent of requests answered 5xx
        fire = _traffic_series((PER_MINUTE, PER_MINUTE), (0.0, 1.5 * threshold / 100), minutes)
        quiet = _traffic_series((PER_MINUTE, PER_MINUTE), (0.0, 0.7 * threshold / 100), minutes)
    elif signal == "traffic":  # threshold in requests per second: alert below it
        fire = _traffic_series((PER_MINUTE, 0.7 * threshold * 60), (0.0, 0.0), minutes)
        quiet = _traffic_series((PER_MINUTE, 1.5 * threshold * 60), (0.0, 0.0), minutes)
    elif signal == "latency":  # threshold in milliseconds for the 99th percentile
        seconds = threshold / 1000
        i = BUCKETS.index(seconds)
        above = (BUCKETS[i] + BUCKETS[i + 1]) / 2
        below = (BUCKETS[i - 1] + BUCKETS[i]) / 2
        fire = _latency_series(0.05, above, minutes)     # p99 inside (threshold, next bucket]
        quiet = _latency_series(0.02, below, minutes)    # p99 inside (previous bucket, threshold]
    elif signal == "saturation":  # threshold in percent of capacity in use
        capacity = 32.0
        fire, quiet = [], []
        for share, out in ((threshold + 10, fire), (threshold - 10, quiet)):
            out.append({"series": f"http_requests_in_flight{{{LABELS}}}",
                        "values": _gauge(capacity * 0.3, capacity * share / 100, minutes)})
            out.append({"series": f"http_requests_capacity{{{LABELS}}}", "values": _gauge(capacity, capacity, minutes)})
    else:
        raise ValueError(f"unknown golden signal {signal!r}")
    # When the 5-minute windows first show the condition, an alert without ``for`` would already fire.
    pending = {"latency": "13m", "saturation": "13m", "errors": "16m", "traffic": "17m"}[signal]
    return [
        {"interval": "1m", "input_series": fire,
         "promql_expr_test": [_expect(alert, severity, pending, False), _expect(alert, severity, "25m", True)]},
        {"interval": "1m", "input_series": quiet, "promql_expr_test": [_expect(alert, severity, "25m", False)]},
    ]


@check
def golden_signal_alert(ctx: Context, *, alert: str, signal: str, threshold: float | str, severity: str,
                        host: str = "prometheus", path: str = RULES_DIR) -> Verdict:
    """Alert ``alert`` on ``signal`` fires past the learner's ``threshold`` (after its ``for``), with
    ``severity``, and stays silent on a near miss."""
    tests = golden_scenarios(signal, float(threshold), alert, severity)
    verdict = alert_behaves(ctx, alert=alert, tests=tests, host=host, path=path)
    if verdict.passed:
        return ok(f"{alert} ({signal}, threshold {threshold}) fires after its for:, with severity {severity}, "
                  f"and stays quiet on a near miss")
    return verdict


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


def _phases(phases: list[tuple[int, float]], minutes: int) -> list[dict[str, str]]:
    """Request counters at PER_MINUTE with an error ratio that changes at the given minutes."""
    ok_values, err_values, ok_total, err_total = [], [], 0.0, 0.0
    for minute in range(minutes + 1):
        ok_values.append(f"{ok_total:g}")
        err_values.append(f"{err_total:g}")
        ratio = next(r for start, r in reversed(phases) if minute >= start)
        ok_total += PER_MINUTE * (1 - ratio)
        err_total += PER_MINUTE * ratio
    return [{"series": f'http_requests_total{{{LABELS},code="200"}}', "values": " ".join(ok_values)},
            {"series": f'http_requests_total{{{LABELS},code="500"}}', "values": " ".join(err_values)}]


def burn_rate_scenarios(part: str, target: float, page: str, ticket: str) -> list[dict[str, Any]]:
    """promtool test groups for one property of burn-rate alerting at SLO ``target`` (percent).

    fast: half the requests fail from minute 60: the page fires by minute 90.
    reset: the same burst stops at minute 95: by minute 115 the 5-minute window has cleared and the
           page has stopped, although the 1-hour window is still far over (only the AND of a long and a
           short window resets this fast).
    slow: 8x the budget fails from minute 60: a ticket by 6.5 hours, never a page (8 < 14.4).
    quiet: half the budget fails all along: nothing fires.
    recording: a constant 3% error ratio: each recording rule is exactly 0.03 at 7 hours.
    """
    budget = 1 - target / 100
    if part == "recording":
        tests = [{"expr": f"abs(sum({name}) - 0.03) < bool 1e-6", "eval_time": "7h",
                  "exp_samples": [{"labels": "{}", "value": 1}]} for name in RECORDING.values()]
        return [{"interval": "1m", "input_series": _phases([(0, 0.03)], 7 * 60), "promql_expr_test": tests}]
    if part == "fast":
        return [{"interval": "1m", "input_series": _phases([(0, 0.0), (60, 0.5)], 100),
                 "promql_expr_test": [_expect(page, "page", "90m", True)]}]
    if part == "reset":
        return [{"interval": "1m", "input_series": _phases([(0, 0.0), (60, 0.5), (95, 0.0)], 120),
                 "promql_expr_test": [_expect(page, "page", "90m", True), _expect(page, "page", "115m", False)]}]
    if part == "slow":
        return [{"interval": "1m", "input_series": _phases([(0, 0.0), (60, 8 * budget)], 400),
                 "promql_expr_test": [_expect(ticket, "ticket", "390m", True), _expect(page, "page", "390m", False),
                                      _expect(page, "page", "120m", False)]}]
    if part == "quiet":
        return [{"interval": "1m", "input_series": _phases([(0, 0.5 * budget)], 400),
                 "promql_expr_test": [_expect(ticket, "ticket", "390m", False), _expect(page, "page", "390m", False)]}]
    raise ValueError(f"unknown burn-rate property {part!r}")


@check
def burn_rate(ctx: Context, *, part: str, slo_target: float | str, page_alert: str, ticket_alert: str,
              host: str = "prometheus", path: str = RULES_DIR) -> Verdict:
    """One property of multi-window, multi-burn-rate alerting for the learner's SLO (percent)."""
    target = slo_target
    tests = burn_rate_scenarios(part, float(target), page_alert, ticket_alert)
    what = {"fast": f"{page_alert} pages on a fast burn", "reset": f"{page_alert} stops soon after the burn stops",
            "slow": f"{ticket_alert} opens a ticket on a slow burn, with no page",
            "quiet": "nothing fires while the error budget holds",
            "recording": f"the recording rules {', '.join(RECORDING.values())} give the error ratio"}[part]
    verdict = alert_behaves(ctx, alert=page_alert if part != "slow" else ticket_alert, tests=tests, host=host,
                            path=path)
    if verdict.passed:
        return ok(f"{what} (SLO {target}%)")
    reason = verdict.feedback.split("does not behave as required: ", 1)[-1]
    return fail(f"not so: {what} (SLO {target}%): {reason}")
