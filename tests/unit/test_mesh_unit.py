"""graders/mesh.py without Docker: the pass and each failure of every check, from canned observer output."""

from __future__ import annotations

import json

import pytest
from graders import mesh

from ladderlab.grading.checks import Listener, evaluate
from ladderlab.testing import FakeContext, FakeRunner

HOSTS = ["ra", "rb", "rc"]
PODS = ["10.70.1.0/24", "10.70.2.0/24", "10.70.3.0/24"]
ADDR = {"ra": "10.200.5.11", "rb": "10.200.5.12", "rc": "10.200.5.13"}
POD_IP = {"ra": "10.70.1.1", "rb": "10.70.2.1", "rc": "10.70.3.1"}
BIRD_SHA = "a" * 64
LINK = {("ra", "rb"): ("169.254.12.1", "169.254.12.2", "wg-b"), ("ra", "rc"): ("169.254.13.1", "169.254.13.3", "wg-c"),
        ("rb", "ra"): ("169.254.12.2", "169.254.12.1", "wg-a"), ("rb", "rc"): ("169.254.23.2", "169.254.23.3", "wg-c"),
        ("rc", "ra"): ("169.254.13.3", "169.254.13.1", "wg-a"), ("rc", "rb"): ("169.254.23.3", "169.254.23.2", "wg-b")}
ECHO = (r"python3 -c .*IP_RECVTTL", "listening\n", 0)


def table(host: str, extra: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
    routes: list[dict[str, object]] = [
        {"dst": "default", "gateway": "10.200.5.254", "dev": "eth0", "flags": []},
        {"dst": "10.200.5.0/24", "dev": "eth0", "protocol": "kernel", "scope": "link", "prefsrc": ADDR[host]},
        {"type": "local", "dst": POD_IP[host].rsplit(".", 1)[0] + ".0/24", "table": "local", "dev": "lo",
         "protocol": "kernel", "scope": "host"},
    ]
    for (a, b), (_, peer, dev) in LINK.items():
        if a == host:
            routes.append({"dst": PODS[HOSTS.index(b)], "gateway": peer, "dev": dev, "protocol": "bird", "metric": 32})
    return routes + (extra or [])


def ss(host: str) -> str:
    return "".join(f"0 0 {mine}:{179 if i % 2 else 40001} {peer}:{40002 if i % 2 else 179}\n"
                   for i, ((a, _), (mine, peer, _)) in enumerate(LINK.items()) if a == host)


def observer(host: str, *, routes: list[dict[str, object]] | None = None, ss_out: str | None = None,
             reach: dict[str, int | None] | None = None, route_get_dev: str = "eth0", extra: tuple = ()) -> FakeRunner:
    ttl = reach if reach is not None else {POD_IP[p]: 64 for p in HOSTS if p != host}
    return FakeRunner([
        *extra,
        ECHO,
        (r"python3 -c .*sendto\(b\"reach\"", json.dumps({"ttl": ttl}), 0),
        (r"^ip -j route show table all", json.dumps(routes if routes is not None else table(host)), 0),
        (r"^ip -j route get", json.dumps([{"dst": "x", "dev": route_get_dev}]), 0),
        (r"^ss -Htn", ss_out if ss_out is not None else ss(host), 0),
    ])


def context(observers: dict[str, FakeRunner] | None = None, **kwargs: object) -> FakeContext:
    obs = {h: observer(h) for h in HOSTS}
    obs.update(observers or {})
    listeners = {(h, 179): Listener(pid=10, uid=0, exe="/usr/sbin/bird", exe_sha256=BIRD_SHA) for h in HOSTS}
    listeners.update(kwargs.pop("listeners", {}))  # type: ignore[arg-type]
    return FakeContext(obs, addresses=ADDR, listeners=listeners,  # type: ignore[arg-type]
                       tools=FakeRunner([(r"^sha256sum", f"{BIRD_SHA}  /usr/sbin/bird\n", 0)]), **kwargs)  # type: ignore[arg-type]


ARGS = {"hosts": HOSTS, "pods": PODS}


# --- mesh-reach ---------------------------------------------------------------------------------------


def test_mesh_reach_passes_when_every_direction_answers():
    ctx = context()
    verdict = evaluate(ctx, mesh.mesh_reach, ARGS)
    assert verdict.passed, verdict
    assert "6 directions" in verdict.feedback
    # the echo binds to the region's pod address, the client to its own
    assert any("10.70.3.1" in c and "IP_RECVTTL" in c for c in ctx.observe("rc").ran)  # type: ignore[attr-defined]


def test_mesh_reach_names_the_silent_directions():
    ctx = context({"rc": observer("rc", reach={POD_IP["ra"]: None, POD_IP["rb"]: 63})})
    verdict = evaluate(ctx, mesh.mesh_reach, ARGS)
    assert verdict.status == "failed" and "rc->ra" in verdict.feedback and "rc->rb" not in verdict.feedback


def test_mesh_reach_fails_when_a_pod_address_is_gone():
    gone = observer("rb", extra=((r"IP_RECVTTL", "bind-error 99 Cannot assign requested address\n", 0),))
    verdict = evaluate(context({"rb": gone}), mesh.mesh_reach, ARGS)
    assert verdict.status == "failed" and "10.70.2.1" in verdict.feedback


def test_mesh_reach_cannot_judge_when_our_echo_does_not_start():
    broken = observer("rb", extra=((r"IP_RECVTTL", "python3: not found\n", 0),))
    assert evaluate(context({"rb": broken}), mesh.mesh_reach, ARGS).status == "error"


# --- bgp-learned ---------------------------------------------------------------------------------------


def test_bgp_learned_passes_with_bird_routes_via_established_peers():
    verdict = evaluate(context(), mesh.bgp_learned, ARGS)
    assert verdict.passed, verdict


def test_bgp_learned_rejects_a_static_route_for_a_pod():
    static = [r if r.get("dst") != PODS[2] else {**r, "protocol": "boot"} for r in table("ra")]
    verdict = evaluate(context({"ra": observer("ra", routes=static)}), mesh.bgp_learned, ARGS)
    assert verdict.status == "failed" and "ra: no route to rc's pod prefix from bird" in verdict.feedback


def test_bgp_learned_rejects_a_more_specific_static_route_beside_birds():
    extra = table("rb", [{"dst": "10.70.1.0/25", "gateway": "169.254.12.1", "dev": "wg-a", "protocol": "static"}])
    verdict = evaluate(context({"rb": observer("rb", routes=extra)}), mesh.bgp_learned, ARGS)
    assert verdict.status == "failed" and "10.70.1.0/25 covers ra's pod prefix" in verdict.feedback


def test_bgp_learned_rejects_a_typed_in_proto_bird_route_without_a_session():
    only_one = "0 0 169.254.12.1:179 169.254.12.2:40002\n"  # no session with rc
    verdict = evaluate(context({"ra": observer("ra", ss_out=only_one)}), mesh.bgp_learned, ARGS)
    assert verdict.status == "failed" and "169.254.13.3" in verdict.feedback and "not a BGP peer" in verdict.feedback


def test_bgp_learned_wants_the_images_bird_on_the_bgp_port():
    other = {("rc", 179): Listener(pid=7, uid=0, exe="/usr/bin/python3", exe_sha256="b" * 64)}
    verdict = evaluate(context(listeners=other), mesh.bgp_learned, ARGS)
    assert verdict.status == "failed" and "not by the image's bird" in verdict.feedback


# --- no-leak ---------------------------------------------------------------------------------------------


def test_no_leak_passes_with_only_pod_prefixes_from_bird():
    assert evaluate(context(), mesh.no_leak, ARGS).passed


def test_no_leak_rejects_a_tunnel_subnet_learned_from_bgp():
    leaked = table("ra", [{"dst": "169.254.23.0/24", "gateway": "169.254.12.2", "dev": "wg-b", "protocol": "bird"}])
    verdict = evaluate(context({"ra": observer("ra", routes=leaked)}), mesh.no_leak, ARGS)
    assert verdict.status == "failed" and "169.254.23.0/24" in verdict.feedback


def test_no_leak_judges_nothing_before_the_pods_reach_each_other():
    silent = observer("rb", reach={POD_IP["ra"]: None, POD_IP["rc"]: None})
    verdict = evaluate(context({"rb": silent}), mesh.no_leak, ARGS)
    assert verdict.status == "failed" and "do not reach each other yet" in verdict.feedback


def test_mesh_reach_and_no_leak_share_one_probe_run():
    ctx = context()
    assert evaluate(ctx, mesh.mesh_reach, ARGS).passed and evaluate(ctx, mesh.no_leak, ARGS).passed
    assert sum("sendto(b\"reach\"" in c for c in ctx.observe("ra").ran) == 1  # type: ignore[attr-defined]


def test_no_leak_rejects_the_underlay_through_a_tunnel():
    verdict = evaluate(context({"rb": observer("rb", route_get_dev="wg-c")}), mesh.no_leak, ARGS)
    assert verdict.status == "failed" and "through wg-c" in verdict.feedback


# --- failover / failback -------------------------------------------------------------------------------


def timeline(outage: float, back: float, *, via_ttl: int = 63, before_ttl: int = 64, lead: float = 2.0,
             cut_len: float = 4.0, tail: float = 3.0) -> dict[str, object]:
    """A run with probes every 0.1 s: direct before the cut, none for ``outage`` s after it, via rb until the
    lift, none for ``back`` s after it, direct after that."""
    t0, probes = 1000.0, []
    t_cut, t_lift = t0 + lead, t0 + lead + cut_len
    t = t0
    while t < t_lift + back + tail:
        if t < t_cut:
            answer = (t + 0.01, before_ttl)
        elif t < t_cut + outage:
            answer = None
        elif t < t_lift:
            answer = (t + 0.01, via_ttl)
        elif t < t_lift + back:
            answer = None
        else:
            answer = (t + 0.01, 64)
        probes.append([t, answer[0] if answer else None, answer[1] if answer else None])
        t = round(t + 0.1, 3)
    return {"probes": probes, "t_cut": t_cut, "t_lift": t_lift, "error": None}


FAILOVER = {"src": "ra", "dst": "rc", "via": "rb", "budget": 10, **ARGS}
FAILBACK = {"src": "ra", "dst": "rc", "budget": 10, **ARGS}


def run_failover(answer: dict[str, object], check=mesh.failover, args=FAILOVER):  # type: ignore[no-untyped-def]
    admin = FakeRunner([(r"python3 -c .*ladderlab-mesh-cut", json.dumps(answer), 0)])
    ctx = context()
    ctx._observers[("ra", True)] = admin  # the admin observer of ra runs the experiment
    return evaluate(ctx, check, args), admin


def test_failover_and_failback_within_the_budget():
    answer = timeline(outage=3.0, back=2.0)
    verdict, admin = run_failover(answer)
    assert verdict.passed and "3.0 s" in verdict.feedback, verdict
    assert "10.70.1.1" in admin.ran[0] and "10.70.3.1" in admin.ran[0] and ADDR["rc"] in admin.ran[0]
    back, _ = run_failover(answer, mesh.failback, FAILBACK)
    assert back.passed and "2.0 s" in back.feedback, back


def test_failover_beyond_the_budget_fails():
    verdict, _ = run_failover(timeline(outage=11.0, back=1.0, cut_len=13.0))
    assert verdict.status == "failed" and "11.0 s" in verdict.feedback


def test_failover_that_never_comes_through_rb_fails():
    answer = timeline(outage=13.0, back=1.0, cut_len=13.0)  # nothing answered while cut
    verdict, _ = run_failover(answer)
    assert verdict.status == "failed" and "did not reach" in verdict.feedback


def test_one_lucky_answer_is_no_recovery():
    answer = timeline(outage=13.0, back=1.0, cut_len=13.0)
    probes = answer["probes"]
    assert isinstance(probes, list)
    lucky = next(p for p in probes if p[0] >= 1004.0)
    lucky[1], lucky[2] = lucky[0] + 0.01, 63
    assert run_failover(answer)[0].status == "failed"


def test_failback_beyond_the_budget_fails():
    verdict, _ = run_failover(timeline(outage=3.0, back=12.0), mesh.failback, FAILBACK)
    assert verdict.status == "failed" and "12.0 s" in verdict.feedback


def test_steady_state_through_the_third_region_fails_both():
    answer = timeline(outage=0.0, back=0.0, before_ttl=63)
    assert "not over their direct tunnel" in run_failover(answer)[0].feedback
    assert run_failover(answer, mesh.failback, FAILBACK)[0].status == "failed"


def test_unreachable_before_the_cut_fails_without_cutting():
    verdict, _ = run_failover({"probes": [[1.0, None, None]], "t_cut": None, "t_lift": None,
                               "error": "unreachable-before"})
    assert verdict.status == "failed" and "even before" in verdict.feedback


def test_a_cut_that_could_not_be_made_is_not_the_learners_failure():
    verdict, _ = run_failover({"probes": [], "t_cut": None, "t_lift": None, "error": "cut-failed: iptables: no"})
    assert verdict.status == "error"


def test_direct_answers_during_the_cut_mean_the_cut_did_not_work():
    verdict, _ = run_failover(timeline(outage=0.0, back=0.0, via_ttl=64))
    assert verdict.status == "error"


def test_failover_and_failback_share_one_run():
    ctx = context()
    admin = FakeRunner([(r"ladderlab-mesh-cut", json.dumps(timeline(outage=3.0, back=2.0)), 0)])
    ctx._observers[("ra", True)] = admin
    assert evaluate(ctx, mesh.failover, FAILOVER).passed
    assert evaluate(ctx, mesh.failback, FAILBACK).passed
    assert len(admin.ran) == 1


@pytest.mark.parametrize(("outage", "expected"), [(0.5, 0.5), (2.0, 2.0)])
def test_recovery_counts_from_the_start(outage: float, expected: float):
    answer = timeline(outage=outage, back=1.0)
    probes = [(p[0], p[1], p[2]) for p in answer["probes"]]  # type: ignore[union-attr]
    assert mesh.recovery(probes, 1002.0, 1006.0, direct=False) == pytest.approx(expected, abs=0.051)


# --- survives-restart ----------------------------------------------------------------------------------


def test_survives_restart_restarts_every_region_and_probes_again():
    ctx = context()
    verdict = evaluate(ctx, mesh.survives_restart, ARGS)
    assert verdict.passed, verdict
    assert ctx.restarted == [("ra", "rb", "rc")]


def test_survives_restart_fails_when_the_mesh_does_not_come_back():
    ctx = context()

    def broken(_: tuple[str, ...]) -> None:
        for h in HOSTS:
            ctx._observers[h] = observer(h, reach={POD_IP[p]: None for p in HOSTS if p != h})

    ctx.on_restart = broken
    verdict = evaluate(ctx, mesh.survives_restart, {**ARGS, "within": 0.0})
    assert verdict.status == "failed" and "restarted" in verdict.feedback


def test_survives_restart_does_not_restart_a_mesh_that_does_not_work():
    ctx = context({"ra": observer("ra", reach={POD_IP["rb"]: None, POD_IP["rc"]: None})})
    verdict = evaluate(ctx, mesh.survives_restart, ARGS)
    assert verdict.status == "failed" and "before any restart" in verdict.feedback
    assert ctx.restarted == []


# --- nat-idle ------------------------------------------------------------------------------------------

NAT = {"hidden": "rc", "peers": ["ra", "rb"]}
NAT_ARGS = {**ARGS, "nat": NAT, "gateway": "natgw", "forgets": 20, "quiet": 40.0, "recover": 0.0}
NATGW = "10.200.5.14"
IPT = (r"^iptables -w 5 -t raw", "", 0)


def samples(gone: dict[str, float] | None = None, *, start: tuple[str, ...] = ("ra", "rb")) -> dict[str, object]:
    """The NAT's table twice a second for 40 s: rc's mapping toward each peer in ``start`` is listed until
    ``gone[peer]`` s (never gone when absent)."""
    out = []
    for i in range(81):
        t = i / 2
        live = [ADDR[p] for p in start if t < (gone or {}).get(p, 1e9)]
        out.append([t, sorted(live)])
    return {"samples": out}


def nat_context(table: dict[str, object], *, after: dict[str, int | None] | None = None,
                before: dict[str, int | None] | None = None) -> tuple[FakeContext, FakeRunner]:
    """ra and rb keep rc behind the NAT (their admin observers take the iptables rules); ``before`` and
    ``after``: what ra's and rb's probes to rc's pod get (6 s before the quiet, 8 s after it)."""
    obs = {}
    for h in ("ra", "rb"):
        extra: list[tuple[str, str, int]] = [IPT]
        if after is not None:
            extra.append((r'sendto\(b"reach".* 8\.0 ', json.dumps({"ttl": {POD_IP["rc"]: after.get(h)}}), 0))
        if before is not None:
            extra.append((r'sendto\(b"reach".* 6\.0 ', json.dumps({"ttl": {POD_IP["rc"]: before.get(h)}}), 0))
        obs[h] = observer(h, extra=tuple(extra))
    gw = FakeRunner([(r"nf_conntrack", json.dumps(table), 0)])
    ctx = context(obs)
    ctx._observers[("natgw", True)] = gw
    ctx._addresses["natgw"] = NATGW
    return ctx, gw


def test_nat_idle_passes_when_the_mappings_outlive_the_quiet():
    ctx, gw = nat_context(samples())
    verdict = evaluate(ctx, mesh.nat_idle, NAT_ARGS)
    assert verdict.passed, verdict
    # bird frozen on every region, then thawed; the NAT's table watched for rc's address toward ra's and rb's
    assert [a for a in ctx.acted if a[0] == "signal"] == (
        [("signal", h, 10, "STOP") for h in HOSTS] + [("signal", h, 10, "CONT") for h in HOSTS])
    assert ADDR["rc"] in gw.ran[0] and ADDR["ra"] in gw.ran[0] and ADDR["rb"] in gw.ran[0]
    # rc stays behind its NAT: ra and rb drop what comes straight from rc's address, and what goes to it
    ra_rules = [c for c in ctx.observe("ra", admin=True).ran if c.startswith("iptables")]  # type: ignore[attr-defined]
    assert any("PREROUTING" in c and f"-s {ADDR['rc']}" in c for c in ra_rules)
    assert any("OUTPUT" in c and f"-d {ADDR['rc']}" in c for c in ra_rules)


def test_nat_idle_fails_when_the_nat_forgets_a_mapping():
    ctx, _ = nat_context(samples({"ra": 30.5}), after={"ra": None, "rb": 64})
    verdict = evaluate(ctx, mesh.nat_idle, NAT_ARGS)
    assert verdict.status == "failed", verdict
    assert "toward ra after 30 s" in verdict.feedback and "ra->rc got no answer" in verdict.feedback
    assert ("signal", "rc", 10, "CONT") in ctx.acted


def test_a_short_gap_fails_even_when_the_probe_afterwards_is_lucky():
    """25 s keepalives against a 20 s NAT: gone from 20 to 25 s, back when the keepalive opens it again."""
    table = samples()
    for t, live in table["samples"]:  # type: ignore[union-attr]
        if 20 <= t < 25:
            live.remove(ADDR["rb"])
    verdict = evaluate(nat_context(table)[0], mesh.nat_idle, NAT_ARGS)
    assert verdict.status == "failed" and "toward rb after 20 s" in verdict.feedback, verdict


def test_nat_idle_fails_when_the_probe_is_lost_although_the_mappings_stayed():
    ctx, _ = nat_context(samples(), after={"ra": 64, "rb": None})
    verdict = evaluate(ctx, mesh.nat_idle, NAT_ARGS)
    assert verdict.status == "failed" and "rb->rc" in verdict.feedback and "kept" in verdict.feedback


def test_nat_idle_judges_only_the_mappings_the_mesh_had():
    """Hub and spoke: rc has no tunnel to ra, so no mapping toward ra to keep; ra reaches rc through rb."""
    ctx, _ = nat_context(samples(start=("rb",)))
    assert evaluate(ctx, mesh.nat_idle, NAT_ARGS).passed


def test_nat_idle_needs_a_mesh_first_and_freezes_nothing_without_one():
    ctx, gw = nat_context(samples(), before={"ra": None, "rb": 64})
    verdict = evaluate(ctx, mesh.nat_idle, NAT_ARGS)
    assert verdict.status == "failed" and "ra->rc" in verdict.feedback and "build the mesh" in verdict.feedback
    assert not [a for a in ctx.acted if a[0] == "signal"] and gw.ran == []


def test_an_unreadable_nat_table_is_not_the_learners_failure_and_bird_is_thawed():
    ctx, _ = nat_context({"error": "13 Permission denied"})
    verdict = evaluate(ctx, mesh.nat_idle, NAT_ARGS)
    assert verdict.status == "error", verdict
    assert [a[3] for a in ctx.acted if a[0] == "signal"] == ["STOP"] * 3 + ["CONT"] * 3


def test_without_bird_nothing_is_frozen_and_the_quiet_is_judged_as_it_is():
    """Static routes: nothing listens on :179, the mesh is quiet anyway."""
    ctx, _ = nat_context(samples())
    ctx._listeners.clear()
    assert evaluate(ctx, mesh.nat_idle, NAT_ARGS).passed and not ctx.acted


def test_failover_cuts_the_address_the_nated_region_comes_from():
    admin = FakeRunner([IPT, (r"python3 -c .*ladderlab-mesh-cut", json.dumps(timeline(outage=3.0, back=2.0)), 0)])
    ctx = context({"rb": observer("rb", extra=(IPT,))})
    ctx._observers[("ra", True)] = admin
    ctx._addresses["natgw"] = NATGW
    verdict = evaluate(ctx, mesh.failover, {**FAILOVER, "cut": "natgw", "nat": NAT})
    assert verdict.passed, verdict
    experiment = next(c for c in admin.ran if "ladderlab-mesh-cut" in c)
    assert NATGW in experiment and ADDR["rc"] not in experiment
