"""SLO and alerting checks (Prometheus): the learner's rule files, read through the
Docker API, validated and unit-tested with promtool from the Prometheus host's
*image* against series the lab defines (the learner never sees them); whether
the running Prometheus loaded a rule, asked over HTTP from the probe."""

from __future__ import annotations

import json
from typing import Any

import yaml

from graders._net import ObservationError, http_get
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

RULES_DIR = "/etc/prometheus/rules"


def _stage_rules(ctx: Context, host: str, path: str) -> tuple[Runner, list[str]] | Verdict:
    files = {n: d for n, d in ctx.read_dir(host, path).items() if n.endswith((".yml", ".yaml"))}
    if not files:
        return fail(f"{host}: no rule files (*.yml) in {path}")
    tools = ctx.tools(host)
    names = []
    for name, data in sorted(files.items()):
        tools.put_file(f"/root/rules/{name}", data)
        names.append(f"/root/rules/{name}")
    return tools, names


def _first_problem(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("Checking")]
    bad = [ln for ln in lines if "FAILED" in ln or "error" in ln.lower() or "err" in ln.lower()]
    return (bad or lines or ["rejected"])[0][:200]


def promtool_failure(text: str) -> str:
    """One line from ``promtool test rules`` output: which alert, when, what was expected and what fired."""
    lines = [ln.strip() for ln in text.splitlines()]
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
    result = tools.run("promtool check rules " + " ".join(["%s"] * len(names)), *names, timeout=60)
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
    tools.put_file("/root/ladderlab-tests.yml", yaml.safe_dump(suite).encode())
    result = tools.run("promtool test rules /root/ladderlab-tests.yml", timeout=120)
    if result.failed:
        return fail(f"alert {alert} does not behave as required: {promtool_failure(result.stdout + result.stderr)}")
    return ok(f"alert {alert} fires when it should and stays quiet when it should not ({len(tests)} scenarios)")


def _rules_api(runner: Runner, address: str, port: int) -> list[dict[str, Any]]:
    answer = http_get(runner, f"http://{address}:{port}/api/v1/rules")
    try:
        data = json.loads(str(answer.get("body", "")))
        return [r for g in data["data"]["groups"] for r in g["rules"]]
    except (ValueError, KeyError, TypeError):
        raise ObservationError(f"Prometheus answered {answer.get('status')} without a rules list") from None


@check
def alert_loaded(ctx: Context, *, alert: str, host: str = "prometheus", port: int = 9090,
                 source: str = "probe") -> Verdict:
    """The running Prometheus has loaded alerting rule ``alert`` (reload after editing rule files)."""
    rules = _rules_api(ctx.observe(source), ctx.address(host), port)
    names = [r.get("name") for r in rules if r.get("type") == "alerting"]
    if alert not in names:
        return fail(f"{host}: Prometheus has not loaded alert {alert} (loaded: {', '.join(map(str, names)) or 'none'})"
                    f" - reload it (POST /-/reload)")
    return ok(f"{host}: Prometheus evaluates alert {alert}")
