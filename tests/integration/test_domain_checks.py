"""Each domain's checks against a real environment: failing on the untouched
environment, passing once a correct configuration is applied by hand (the labs'
self-tests then exercise them through notebooks)."""

from __future__ import annotations

import time

import pytest

from ladderlab.environments import runtime
from ladderlab.environments.images import tool_image
from ladderlab.grading.checks import evaluate, load_graders
from ladderlab.grading.context import LiveContext

from .conftest import leftovers


@pytest.fixture
def envctx(images, client, settings, request):
    load_graders(settings.root)
    env = runtime.up(settings, request.param, client=client, learner="domain-checks")
    ctx = LiveContext(env, tool_image(settings, client, "probe"))
    yield env, ctx
    env.down()
    assert leftovers(client, env.id) == ([], [])


DNS_FIX = """set -e
cat > /etc/bind/db.{zone} <<'ZONE'
$TTL 300
@ IN SOA ns1.{zone}. hostmaster.{zone}. ( 2026112201 3600 600 604800 300 )
@ IN NS ns1.{zone}.
ns1 IN A {dns}
{web_host} IN A {web}
www IN CNAME {web_host}
@ IN MX 10 mail.{zone}.
mail IN A {web}
ZONE
echo 'zone "{zone}" {{ type master; file "/etc/bind/db.{zone}"; }};' >> /etc/bind/named.conf.local
sed -i 's/dnssec-validation auto;/dnssec-validation auto;\\n\\trecursion no;/' /etc/bind/named.conf.options
rndc reload
"""

TLS_FIX = """set -e
mkdir -p /etc/ladderlab-ca && cd /etc/ladderlab-ca
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 365 -subj "/CN=Lab CA" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout /etc/ssl/private/{name}.key -out srv.csr -subj "/CN={name}" 2>/dev/null
printf 'subjectAltName=DNS:{name}\\n' > ext.cnf
openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out /etc/ssl/certs/{name}.crt -days 90 \\
  -extfile ext.cnf 2>/dev/null
chmod 600 /etc/ssl/private/{name}.key
cat > /etc/nginx/sites-enabled/default <<'NGINX'
server {{ listen 80 default_server; return 301 https://$host$request_uri; }}
server {{
  listen 443 ssl default_server;
  server_name {name};
  ssl_certificate /etc/ssl/certs/{name}.crt;
  ssl_certificate_key /etc/ssl/private/{name}.key;
  ssl_protocols TLSv1.2 TLSv1.3;
  root /var/www/html;
}}
NGINX
nginx -t 2>/dev/null && nginx -s reload
"""


@pytest.mark.parametrize("envctx", ["dns-tls"], indirect=True)
def test_dns_and_tls_checks(envctx):
    env, ctx = envctx
    p = env.params
    zone, name = p["zone"], f"{p['web_host']}.{p['zone']}"
    dns_plan = [("dns.authoritative", {"server": "dns", "zone": zone}),
                ("dns.record", {"server": "dns", "name": name, "rtype": "A", "host": "web"}),
                ("dns.record", {"server": "dns", "name": f"www.{zone}", "rtype": "CNAME", "values": [f"{name}."]}),
                ("dns.not_open_resolver", {"server": "dns"}),
                ("dns.zone_valid", {"host": "dns", "zone": zone, "path": f"/etc/bind/db.{zone}"})]
    tls_plan = [("tls.verified", {"host": "web", "server_name": name, "ca_host": "web",
                                  "ca_path": "/etc/ladderlab-ca/ca.crt", "intermediate": False}),
                ("tls.modern_protocols_only", {"host": "web", "server_name": name}),
                ("tls.redirects_to_https", {"host": "web", "server_name": name}),
                ("tls.key_private", {"host": "web", "path": f"/etc/ssl/private/{name}.key"})]
    before = [evaluate(ctx, *step) for step in _fns(dns_plan + tls_plan)]
    assert not any(v.passed for v in before), before
    fixed = env.host("dns").run(DNS_FIX.format(dns=ctx.address("dns"), web=ctx.address("web"), **p))
    assert fixed.succeeded, fixed.stderr
    fixed = env.host("web").run(TLS_FIX.format(name=name))
    assert fixed.succeeded, fixed.stderr
    after = [evaluate(ctx, *step) for step in _fns(dns_plan + tls_plan)]
    assert all(v.passed for v in after), after
    # the fix above signs the leaf with the root itself: what sec-2 requires (an intermediate) is not met
    strict = evaluate(ctx, *_fns([("tls.verified", {**tls_plan[0][1], "intermediate": True})])[0])
    assert not strict.passed and "root CA signed the server certificate itself" in strict.feedback
    # a key readable by others, and a zone file with a typo, are caught
    env.host("web").run("chmod 644 /etc/ssl/private/%s.key", name)
    env.host("dns").run("echo 'oops IN AAA 1' >> /etc/bind/db.%s", zone)
    again = [evaluate(ctx, *step) for step in _fns([tls_plan[3], dns_plan[4]])]
    assert "mode 0644" in again[0].feedback and "not a valid zone" in again[1].feedback


SLO_RULES = """groups:
- name: golden
  rules:
  - alert: HighErrorRate
    expr: sum(rate(http_requests_total{code=~"5.."}[5m])) / sum(rate(http_requests_total[5m])) > 0.05
    for: 2m
    labels: {severity: page}
"""
SLO_TESTS = [
    {"interval": "1m",
     "input_series": [{"series": 'http_requests_total{handler="/api/checkout",code="500"}', "values": "0+10x20"},
                      {"series": 'http_requests_total{handler="/api/checkout",code="200"}', "values": "0+90x20"}],
     "alert_rule_test": [{"eval_time": "10m", "alertname": "HighErrorRate",
                          "exp_alerts": [{"exp_labels": {"severity": "page"}}]}]},
    {"interval": "1m",
     "input_series": [{"series": 'http_requests_total{handler="/api/checkout",code="200"}', "values": "0+90x20"}],
     "alert_rule_test": [{"eval_time": "10m", "alertname": "HighErrorRate", "exp_alerts": []}]},
]


@pytest.mark.parametrize("envctx", ["slo"], indirect=True)
def test_slo_checks(envctx):
    env, ctx = envctx
    plan = [("slo.rules_valid", {}), ("slo.alert_behaves", {"alert": "HighErrorRate", "tests": SLO_TESTS}),
            ("slo.alert_loaded", {"alert": "HighErrorRate"})]
    assert not any(v.passed for v in (evaluate(ctx, *s) for s in _fns(plan)))
    prom = env.host("prometheus")
    assert prom.run("cat > /etc/prometheus/rules/golden.yml <<'R'\n" + SLO_RULES + "R\n"
                    "curl -sf -XPOST localhost:9090/-/reload").succeeded
    time.sleep(0.5)
    results = [evaluate(ctx, *s) for s in _fns(plan)]
    assert all(v.passed for v in results), results
    prom.run("sed -i 's/severity: page/severity: ticket/' /etc/prometheus/rules/golden.yml")
    wrong = evaluate(ctx, *_fns(plan[1:2])[0])
    assert not wrong.passed and 'got {alertname="HighErrorRate", severity="ticket"}' in wrong.feedback


@pytest.mark.parametrize("envctx", ["debug"], indirect=True)
def test_tracing_checks(envctx):
    _, ctx = envctx
    plan = [("tracing.http_ok", {"host": "svc", "port": 8080, "path": "/healthz"})]
    broken = evaluate(ctx, *_fns(plan)[0])
    assert not broken.passed and "not healthy" in broken.feedback
    procs = ctx.processes("svc")
    assert any("sleep infinity" in p.args or "ll-start" in p.args for p in procs)
    assert all(isinstance(p.uid, int) for p in procs)


def _fns(plan):
    from ladderlab.grading.checks import REGISTRY

    return [(REGISTRY[name], args) for name, args in plan]
