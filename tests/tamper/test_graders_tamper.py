"""Findings 2, 3 and 5 against real environments: what a hostile learner did to the live state to
get full marks without the work, and the checks that must now refuse it.

* 3: an iptables rule comment with newlines made ``iptables-save`` print a forged ``:INPUT DROP``
  while the kernel's policy was ACCEPT;
* 5: a ``-m recent`` rule dropping only the first SYN from each source made a one-SYN probe call a
  port closed while every real client connects on its retransmit;
* 2: a stand-in HTTP server started as the service's user under the service's argv[0] passed the
  health, user and binary checks.

Each scenario is a function of (env, ctx) returning the verdicts, so the same scenario can be run
against an older grader (that is how "fails on the old code" was verified; see the report of
issue 10). The positive controls show the new checks still pass honest work on the same hosts.
"""

from __future__ import annotations

import time

import pytest

from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.grading.checks import REGISTRY, Verdict, evaluate, load_graders
from ladderlab.grading.context import LiveContext

from ..integration.conftest import leftovers

pytestmark = pytest.mark.docker


@pytest.fixture
def envctx(images, client, settings, request):
    load_graders(settings.root)
    env_name, overrides = request.param
    env = runtime.up(settings, env_name, client=client, learner="tamper-graders", overrides=overrides)
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    yield env, ctx
    env.down()
    assert leftovers(client, env.id) == ([], [])


def run(env, host: str, script: str) -> None:
    result = env.host(host).run(script, timeout=60)
    assert result.succeeded, result.stdout + result.stderr


# --- finding 3: a comment that forges iptables-save output -------------------------------------------

ALLOW = """set -e
iptables -A INPUT -i lo -j ACCEPT
iptables -A INPUT -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT
iptables -A INPUT -p tcp -m multiport --dports 22,80 -j ACCEPT
"""
FORGE = """set -e
iptables -A INPUT -p tcp --dport 1 -m comment --comment "$(printf 'x\\nCOMMIT\\n*filter\\n:INPUT DROP [0:0]')" \\
  -j ACCEPT
"""


def forged_comment(env, ctx) -> Verdict:
    """Policy ACCEPT (inbound is open), plus a comment that prints a second filter table with DROP."""
    run(env, "target", ALLOW + FORGE)
    return evaluate(ctx, REGISTRY["firewall.default_deny"], {"host": "target"})


@pytest.mark.parametrize("envctx", [("firewall", {})], indirect=True)
def test_a_comment_cannot_forge_a_default_deny(envctx):
    env, ctx = envctx
    verdict = forged_comment(env, ctx)
    assert verdict.status == "failed", verdict
    assert "cannot be judged" in verdict.feedback and verdict.feedback.isprintable()
    # control: the kernel really accepts (the outsider reaches the unwanted port)
    from graders._net import tcp_states

    port = env.params["unwanted_port"]
    assert tcp_states(ctx.observe("outsider"), [(ctx.address("target"), port)]) == ["open"]


# --- finding 5: a rule that drops only the first SYN of each source -----------------------------------

FIRST_SYN = """set -e
iptables -A INPUT -p tcp --dport {port} -m conntrack --ctstate NEW -m recent --name first --rcheck --seconds 120 \\
  -j ACCEPT
iptables -A INPUT -p tcp --dport {port} -m conntrack --ctstate NEW -m recent --name first --set -j DROP
iptables -P INPUT DROP
"""


def first_syn_dropped(env, ctx) -> Verdict:
    """The unwanted port drops each source's first SYN and accepts its retransmit."""
    port = env.params["unwanted_port"]
    run(env, "target", ALLOW + FIRST_SYN.format(port=port))
    return evaluate(ctx, REGISTRY["firewall.closed"], {"target": "target", "port": port,
                                                       "sources": ["outsider", "monitor"]})


@pytest.mark.parametrize("envctx", [("firewall", {})], indirect=True)
def test_a_port_that_drops_only_the_first_syn_is_not_closed(envctx):
    env, ctx = envctx
    verdict = first_syn_dropped(env, ctx)
    assert verdict.status == "failed", verdict
    assert "-m recent" in verdict.feedback
    # and the probe itself connects the way a real client does (on the retransmit), from a fresh source
    from graders._net import tcp_states

    t0 = time.monotonic()
    state = tcp_states(ctx.observe("monitor"), [(ctx.address("target"), env.params["unwanted_port"])])
    assert state == ["open"] and time.monotonic() - t0 < 10


@pytest.mark.parametrize("envctx", [("firewall", {})], indirect=True)
def test_an_honestly_closed_port_is_still_judged_closed(envctx):
    env, ctx = envctx
    port = env.params["unwanted_port"]
    run(env, "target", ALLOW + "iptables -P INPUT DROP\n")
    verdict = evaluate(ctx, REGISTRY["firewall.closed"], {"target": "target", "port": port,
                                                          "sources": ["outsider", "monitor"]})
    assert verdict.passed, verdict


# --- finding 2: a stand-in under the service's name and user ------------------------------------------

STAND_IN = r"""set -e
pkill -f '^sh -c while true' || true
pkill -x ledgerd || true
sleep 0.5
cat > /tmp/stand-in.py <<'PY'
import http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("", 8080), H).serve_forever()
PY
nohup setpriv --reuid=ledger --regid=ledger --init-groups \
  bash -c 'exec -a /usr/local/sbin/ledgerd python3 /tmp/stand-in.py' >/dev/null 2>&1 &
for i in $(seq 50); do curl -sf localhost:8080/healthz >/dev/null && exit 0; sleep 0.2; done
exit 1
"""
TRACING = [("tracing.http_ok", {"host": "svc", "port": 8080, "path": "/healthz", "binary": "/usr/local/sbin/ledgerd"}),
           ("tracing.runs_as_user", {"host": "svc", "command": "/usr/local/sbin/ledgerd", "user": "ledger",
                                     "serving_port": 8080, "serving_path": "/healthz"}),
           ("tracing.binary_unchanged", {"host": "svc", "path": "/usr/local/sbin/ledgerd", "serving_port": 8080,
                                         "serving_path": "/healthz"})]


def stand_in(env, ctx) -> list[Verdict]:
    """No fix at all: a Python HTTP server as user ledger, argv[0] /usr/local/sbin/ledgerd, on :8080."""
    run(env, "svc", STAND_IN)
    shown = env.host("svc").run("ps -o user=,args= -C python3,ledgerd; ps -eo user,args | grep -c '^ledger '")
    assert "/usr/local/sbin/ledgerd" in shown.stdout, shown.stdout  # argv[0] as the old checks wanted it
    return [evaluate(ctx, REGISTRY[name], args) for name, args in TRACING]


@pytest.mark.parametrize("envctx", [("debug", {"fault": "wrong-path"})], indirect=True)
def test_a_stand_in_fails_health_user_and_binary_and_the_real_fix_passes(envctx):
    env, ctx = envctx
    verdicts = stand_in(env, ctx)
    assert [v.status for v in verdicts] == ["failed"] * 3, verdicts
    assert all("not by the /usr/local/sbin/ledgerd the image ships" in v.feedback for v in verdicts), verdicts
    # control: the real fix, with ledgerd supervised as the image starts it, passes all three
    run(env, "svc", "pkill -f '[s]tand-in.py' || true; mkdir -p /etc/ledgerd; "
                    "mv /etc/ledger/ledgerd.conf /etc/ledgerd/ledgerd.conf; sh /etc/ladderlab/start.d/10-ledgerd; "
                    "for i in $(seq 50); do curl -sf localhost:8080/healthz >/dev/null && exit 0; sleep 0.2; done; "
                    "exit 1")
    ctx.close()
    fresh = LiveContext(env, ctx.probe_image)  # no cached observation of the stand-in
    after = [evaluate(fresh, REGISTRY[name], args) for name, args in TRACING]
    assert all(v.passed for v in after), after
