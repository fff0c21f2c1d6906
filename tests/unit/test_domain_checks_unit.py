"""DNS, TLS, SLO and tracing checks against a fake context (real ones: tests/integration/test_domain_checks.py)."""

from __future__ import annotations

import json

import pytest

from ladderlab.grading.checks import REGISTRY, FileStat, Listener, evaluate, load_graders
from ladderlab.testing import FakeContext, FakeRunner


@pytest.fixture(scope="module", autouse=True)
def graders(root):
    load_graders(root)


class Ctx(FakeContext):
    def __init__(self, *a, tools=None, dirs=None, stats=None, procs=None, answers=None, listeners=None, **kw):
        super().__init__(*a, **kw)
        self._listeners = listeners or {}
        self._tools = tools
        self._dirs = dirs or {}
        self._stats = stats or {}
        self._procs = procs or {}
        self.answers = answers or {}
        self._addresses.update({"dns": "10.0.0.5", "web": "10.0.0.6", "prometheus": "10.0.0.7", "svc": "10.0.0.8",
                                "probe": "10.0.0.9"})

    def tools(self, host):
        return self._tools

    def read_dir(self, host, path):
        return self._dirs.get((host, path), {})

    def stat(self, host, path):
        return self._stats.get((host, path))

    def processes(self, host):
        return self._procs.get(host, [])

    def listener(self, host, port, proto="tcp"):
        return self._listeners.get((host, port))


def dns_answer(rcode="NOERROR", aa=True, ra=False, records=()):
    return (r"dns\.message", json.dumps({"rcode": rcode, "aa": aa, "ra": ra, "authority": [],
                                         "answer": [{"name": n, "type": t, "ttl": 300, "data": d}
                                                    for n, t, d in records]}), 0)


ZONE = "corp-abc123.lab.example"


def test_dns_authoritative_and_records():
    soa = [(ZONE + ".", "SOA", ["ns1. hostmaster. 1 2 3 4 5"])]
    ok_ctx = Ctx({"probe": FakeRunner([dns_answer(records=soa)])})
    assert evaluate(ok_ctx, REGISTRY["dns.authoritative"], {"server": "dns", "zone": ZONE}).passed
    not_aa = Ctx({"probe": FakeRunner([dns_answer(aa=False, records=soa)])})
    v = evaluate(not_aa, REGISTRY["dns.authoritative"], {"server": "dns", "zone": ZONE})
    assert not v.passed and "not authoritatively" in v.feedback
    refused = Ctx({"probe": FakeRunner([dns_answer(rcode="REFUSED", aa=False)])})
    assert "REFUSED" in evaluate(refused, REGISTRY["dns.authoritative"], {"server": "dns", "zone": ZONE}).feedback

    www = [(f"www.{ZONE}.", "A", ["10.0.0.6"])]
    args = {"server": "dns", "name": f"www.{ZONE}", "rtype": "A", "host": "web"}
    assert evaluate(Ctx({"probe": FakeRunner([dns_answer(records=www)])}), REGISTRY["dns.record"], args).passed
    wrong = [(f"www.{ZONE}.", "A", ["10.0.0.99"])]
    v = evaluate(Ctx({"probe": FakeRunner([dns_answer(records=wrong)])}), REGISTRY["dns.record"], args)
    assert not v.passed and "10.0.0.99, not 10.0.0.6" in v.feedback
    timeout = Ctx({"probe": FakeRunner([(r"dns\.message", json.dumps({"error": "no answer within 2s"}), 0)])})
    assert "did not answer" in evaluate(timeout, REGISTRY["dns.record"], args).feedback


def test_dns_open_resolver_and_zone_file():
    fn = REGISTRY["dns.not_open_resolver"]
    assert evaluate(Ctx({"probe": FakeRunner([dns_answer(rcode="REFUSED", aa=False)])}), fn, {"server": "dns"}).passed
    v = evaluate(Ctx({"probe": FakeRunner([dns_answer(rcode="SERVFAIL", aa=False, ra=True)])}), fn, {"server": "dns"})
    assert not v.passed and "offers recursion" in v.feedback

    zf = REGISTRY["dns.zone_valid"]
    args = {"host": "dns", "zone": ZONE, "path": "/etc/bind/db.zone"}
    tools = FakeRunner([(r"named-checkzone", "OK", 0)])
    assert evaluate(Ctx({}, files={("dns", "/etc/bind/db.zone"): b"$TTL 300"}, tools=tools), zf, args).passed
    assert list(tools.files.values()) == [b"$TTL 300"]  # in a directory of its own
    bad = FakeRunner([(r"named-checkzone", "dns_master_load: db:3: unknown RR type 'AAA'\nzone: not loaded", 1)])
    v = evaluate(Ctx({}, files={("dns", "/etc/bind/db.zone"): b"x"}, tools=bad), zf, args)
    assert not v.passed and "unknown RR type" in v.feedback
    assert "does not exist" in evaluate(Ctx({}, tools=tools), zf, args).feedback


def hs(**fields):
    return (r"ssl\.", json.dumps(fields), 0)


def test_tls_verified_protocols_redirect_and_key_mode():
    args = {"host": "web", "server_name": "www.x", "ca_host": "web", "ca_path": "/etc/ca/ca.crt"}
    signer = (r"leaf_by_root", json.dumps({"roots": 1, "self_signed": True, "ca": True, "leaf_by_root": False}), 0)
    probe = FakeRunner([signer, hs(ok=True, version="TLSv1.3", cipher="X", not_after="", san=["www.x"])])
    ctx = Ctx({"probe": probe}, files={("web", "/etc/ca/ca.crt"): b"PEM"})
    assert evaluate(ctx, REGISTRY["tls.verified"], args).passed
    assert probe.files["/root/ladderlab-ca.pem"] == b"PEM"
    ctx = Ctx({"probe": FakeRunner([hs(ok=False, verify=True, error="Hostname mismatch")])},
              files={("web", "/etc/ca/ca.crt"): b"PEM"})
    v = evaluate(ctx, REGISTRY["tls.verified"], args)
    assert not v.passed and "certificate does not verify: Hostname mismatch" in v.feedback

    def versions(old_ok):
        def answer(cmd):
            return old_ok if "TLSv1_1" in cmd or cmd.rstrip().endswith("TLSv1") else True
        return answer

    class VersionRunner(FakeRunner):
        def __init__(self, old_ok):
            super().__init__([])
            self.old_ok = old_ok

        def run(self, command, *args, timeout=None):
            from ladderlab.environments.transports import CommandResult
            old = args[-1] in ("TLSv1", "TLSv1_1")
            ok_ = self.old_ok if old else True
            version = "TLSv1.2" if args[-1] == "TLSv1_2" else "TLSv1.3"
            return CommandResult("x", 0, json.dumps({"ok": ok_, "version": version, "error": "no"}), "")

    fn = REGISTRY["tls.modern_protocols_only"]
    assert evaluate(Ctx({"probe": VersionRunner(False)}), fn, {"host": "web", "server_name": "www.x"}).passed
    v = evaluate(Ctx({"probe": VersionRunner(True)}), fn, {"host": "web", "server_name": "www.x"})
    assert not v.passed and "TLSv1, TLSv1.1" in v.feedback

    red = REGISTRY["tls.redirects_to_https"]
    class Redirects(FakeRunner):  # answers as `return 301 https://www.x$request_uri` does
        def run(self, command, *args, timeout=None):
            from urllib.parse import urlsplit

            from ladderlab.environments.transports import CommandResult
            self.ran.append(f"{command} {args}")
            url = urlsplit(str(args[1]))  # python3 -c SCRIPT URL ...
            target = url.path + (f"?{url.query}" if url.query else "")
            return CommandResult("x", 0, json.dumps({"status": 301, "location": f"https://www.x{target}"}), "")

    good = Redirects()
    assert evaluate(Ctx({"probe": good}), red, {"host": "web", "server_name": "www.x"}).passed
    assert '"Host": "www.x"' in good.ran[0] and len(good.ran) == 2
    plain = FakeRunner([(r"urllib", json.dumps({"status": 200, "location": ""}), 0)])
    assert not evaluate(Ctx({"probe": plain}), red, {"host": "web", "server_name": "www.x"}).passed

    key = REGISTRY["tls.key_private"]
    path = ("web", "/etc/ssl/private/www.key")
    assert evaluate(Ctx({}, stats={path: FileStat(0o600, 0, 0, 10)}), key, {"host": "web", "path": path[1]}).passed
    v = evaluate(Ctx({}, stats={path: FileStat(0o644, 0, 0, 10)}), key, {"host": "web", "path": path[1]})
    assert not v.passed and "mode 0644" in v.feedback


PROMTOOL_FAILED = """Unit Testing:  /root/ladderlab-tests.yml
  FAILED:
    alertname: HighErrorRate, time: 10m,
        exp:[
            0:
              Labels:{alertname="HighErrorRate", severity="page"}
            ],
        got:[
            0:
              Labels:{alertname="HighErrorRate", severity="ticket"}
            ]
"""


def test_slo_rules_are_unit_tested_with_promtool_from_the_image():
    rules = {("prometheus", "/etc/prometheus/rules"): {"slo.yml": b"groups: []", "notes.txt": b"x"}}
    tools = FakeRunner([(r"promtool check rules", "SUCCESS", 0), (r"promtool test rules", "SUCCESS", 0)])
    ctx = Ctx({}, dirs=rules, tools=tools)
    assert evaluate(ctx, REGISTRY["slo.rules_valid"], {}).passed
    assert [f.rsplit("/", 2)[1:] for f in tools.files] == [["rules", "slo.yml"]]
    tests = [{"interval": "1m", "input_series": [], "alert_rule_test": []}]
    assert evaluate(ctx, REGISTRY["slo.alert_behaves"], {"alert": "HighErrorRate", "tests": tests}).passed
    suite = next(v for k, v in tools.files.items() if k.endswith("/tests.yml")).decode()
    assert "/rules/slo.yml" in suite and "alert_rule_test" in suite
    failing = FakeRunner([(r"promtool test rules", PROMTOOL_FAILED, 1)])
    v = evaluate(Ctx({}, dirs=rules, tools=failing), REGISTRY["slo.alert_behaves"], {"alert": "A", "tests": tests})
    assert not v.passed
    assert v.feedback == ('alert A does not behave as required: alertname: HighErrorRate, time: 10m: expected '
                          '{alertname="HighErrorRate", severity="page"}, got {alertname="HighErrorRate", '
                          'severity="ticket"}')
    assert "no rule files" in evaluate(Ctx({}, tools=tools), REGISTRY["slo.rules_valid"], {}).feedback

    api = {"status": "success", "data": {"groups": [{"rules": [{"type": "alerting", "name": "HighErrorRate"}]}]}}
    probe = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": json.dumps(api)}), 0)])
    assert evaluate(Ctx({"probe": probe}), REGISTRY["slo.alert_loaded"], {"alert": "HighErrorRate"}).passed
    v = evaluate(Ctx({"probe": probe}), REGISTRY["slo.alert_loaded"], {"alert": "Other"})
    assert not v.passed and "loaded: HighErrorRate" in v.feedback


def test_tracing_health_process_owner_and_answers():
    up = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": "ok"}), 0)])
    assert evaluate(Ctx({"probe": up}), REGISTRY["tracing.http_ok"], {"host": "svc", "port": 8080}).passed
    down = FakeRunner([(r"urllib", json.dumps({"status": 0, "error": "ConnectionRefusedError"}), 0)])
    v = evaluate(Ctx({"probe": down}), REGISTRY["tracing.http_ok"], {"host": "svc", "port": 8080})
    assert not v.passed and "ConnectionRefusedError" in v.feedback

    served = {("svc", 8080): Listener(40, 999, "/usr/local/bin/ledgerd", "ab" * 32)}
    assert evaluate(Ctx({}, listeners=served), REGISTRY["tracing.runs_as"],
                    {"host": "svc", "port": 8080, "uid": 999}).passed
    as_root = {("svc", 8080): Listener(40, 0, "/usr/local/bin/ledgerd", "ab" * 32)}
    v = evaluate(Ctx({}, listeners=as_root), REGISTRY["tracing.runs_as"], {"host": "svc", "port": 8080, "uid": 999})
    assert not v.passed and "uid 0" in v.feedback

    fn = REGISTRY["tracing.answer_is"]
    args = {"answer": "errno", "param": "fault", "expected": {"wrong-path": "ENOENT", "permission": ["EACCES", "13"]}}
    assert evaluate(Ctx({}, params={"fault": "permission"}, answers={"errno": " eacces "}), fn, args).passed
    v = evaluate(Ctx({}, params={"fault": "wrong-path"}, answers={"errno": "EACCES"}), fn, args)
    assert not v.passed and "ENOENT" not in v.feedback  # feedback never gives the answer away
    assert "no answer 'errno'" in evaluate(Ctx({}, params={"fault": "wrong-path"}), fn, args).feedback
    assert not evaluate(Ctx({}, params={"fault": "slow-syscall"}, answers={"errno": "x"}), fn, args).passed


def test_dns_reverse_and_serial():
    rev = [("6.0.0.10.in-addr.arpa.", "PTR", [f"www.{ZONE}."])]
    ctx = Ctx({"probe": FakeRunner([dns_answer(records=rev)])})
    assert evaluate(ctx, REGISTRY["dns.ptr"], {"server": "dns", "host": "web", "name": f"www.{ZONE}"}).passed
    empty = Ctx({"probe": FakeRunner([dns_answer(rcode="NXDOMAIN")])})
    v = evaluate(empty, REGISTRY["dns.ptr"], {"server": "dns", "host": "web", "name": f"www.{ZONE}"})
    assert not v.passed and "serve the reverse zone 0.0.10.in-addr.arpa" in v.feedback

    def soa(serial):
        return Ctx({"probe": FakeRunner([dns_answer(records=[(ZONE + ".", "SOA", [f"ns1. h. {serial} 1 2 3 4"])])])})

    fn = REGISTRY["dns.soa_serial_sane"]
    assert evaluate(soa("2026112201"), fn, {"server": "dns", "zone": ZONE}).passed
    for bad in ("1", "2026133101", "20261122011"):
        v = evaluate(soa(bad), fn, {"server": "dns", "zone": ZONE})
        assert not v.passed and "YYYYMMDDnn" in v.feedback, bad


def test_tls_certificate_ciphers_and_hsts():
    good = {"san": ["www.x"], "key": "rsa", "bits": 2048, "curve": "", "signature_hash": "sha256",
            "not_after": "2027-01-01T00:00:00", "not_before": "2026-01-01T00:00:00"}
    fn = REGISTRY["tls.certificate_sound"]
    args = {"host": "web", "server_name": "www.x"}
    assert evaluate(Ctx({"probe": FakeRunner([(r"x509", json.dumps(good), 0)])}), fn, args).passed
    weak = {**good, "san": [], "bits": 1024, "signature_hash": "sha1"}
    v = evaluate(Ctx({"probe": FakeRunner([(r"x509", json.dumps(weak), 0)])}), fn, args)
    assert not v.passed
    assert "does not list www.x" in v.feedback and "rsa 1024" in v.feedback and "sha1" in v.feedback
    ec = {**good, "key": "ec", "bits": 256, "curve": "secp256r1"}
    assert evaluate(Ctx({"probe": FakeRunner([(r"x509", json.dumps(ec), 0)])}), fn, args).passed

    ciphers = REGISTRY["tls.strong_ciphers"]
    modern = (r"cafile", json.dumps({"ok": True, "version": "TLSv1.3"}), 0)
    refused = FakeRunner([(r"suites \+", json.dumps({"ok": False, "error": "SSLError"}), 0), modern])
    assert evaluate(Ctx({"probe": refused}), ciphers, args).passed
    accepted = FakeRunner([(r"suites \+", json.dumps({"ok": True, "cipher": "AES256-GCM-SHA384"}), 0), modern])
    v = evaluate(Ctx({"probe": accepted}), ciphers, args)
    assert not v.passed and "AES256-GCM-SHA384" in v.feedback
    no_tls = FakeRunner([(r"ssl", json.dumps({"ok": False, "error": "ConnectionRefusedError"}), 0)])
    v = evaluate(Ctx({"probe": no_tls}), ciphers, args)
    assert not v.passed and "no TLS handshake" in v.feedback

    hsts = REGISTRY["tls.hsts"]
    def header(value):
        return Ctx({"probe": FakeRunner([(r"http\.client", json.dumps({"status": 200, "hsts": value}), 0)])})
    assert evaluate(header("max-age=63072000; includeSubDomains"), hsts, args).passed
    assert "less than" in evaluate(header("max-age=300"), hsts, args).feedback
    assert "no Strict-Transport-Security" in evaluate(header(""), hsts, args).feedback


def test_golden_signal_and_burn_rate_scenarios_are_written_from_the_seed():
    from graders.slo import burn_rate_scenarios, golden_scenarios

    fire, near, spike = golden_scenarios("errors", 2.0, "A", "page")
    assert [(e.at, e.samples) for e in fire.expects] == [(17, ()), (20, (('{severity="page"}', 1),)),
                                                         (25, (('{severity="page"}', 1),))]
    err = next(s for s in fire.series if 'code="500"' in s["series"])["values"].split()
    assert err[10] == "0" and float(err[11]) == pytest.approx(6000 * 0.03)  # 1.5 x 2% from minute 10
    near_err = next(s for s in near.series if 'code="500"' in s["series"])["values"].split()
    assert float(near_err[11]) == pytest.approx(6000 * 0.014)
    assert any('code="404"' in s["series"] for s in near.series)  # client errors are not 5xx
    assert all(e.samples == () for e in near.expects + spike.expects)
    lat_fire, _, _ = golden_scenarios("latency", 500, "L", "page")
    buckets = {s["series"].split('le="')[1].rstrip('"}'): s["values"].split() for s in lat_fire.series}
    assert float(buckets["0.5"][12]) - float(buckets["0.5"][11]) == pytest.approx(6000 * 0.985)  # 1.5% slower
    assert float(buckets["1"][12]) - float(buckets["1"][11]) == pytest.approx(6000)
    with pytest.raises(ValueError):
        golden_scenarios("vibes", 1, "A", "page")

    slow = burn_rate_scenarios("slow", 99.5, "Page", "Ticket")[0]
    err = next(s for s in slow.series if 'code="500"' in s["series"])["values"].split()
    assert float(err[62]) - float(err[61]) == pytest.approx(6000 * 8 * 0.005)
    assert float(err[400]) == pytest.approx(6000 * 8 * 0.005 * 340)  # no precision lost in long series
    rec = burn_rate_scenarios("recording", 99.9, "P", "T")[0].expects
    assert [e.expr.split("(")[2].split(")")[0] for e in rec] == [
        "slo:checkout_errors:ratio_rate5m", "slo:checkout_errors:ratio_rate30m", "slo:checkout_errors:ratio_rate1h",
        "slo:checkout_errors:ratio_rate6h"]


def test_burn_rate_feedback_names_the_property():
    rules = {("prometheus", "/etc/prometheus/rules"): {"slo.yml": b"groups: []"}}
    output = ('  FAILED:\n    expr: "clamp_max(count by (severity) (ALERTS{alertname=\\"P\\",alertstate=\\"firing\\"'
              '}), 1) # e1", time: 105m,\n        exp: nil\n        got: {severity="page"} 1E+00\n')
    failing = FakeRunner([(r"promtool test rules", output, 1)])
    v = evaluate(Ctx({}, dirs=rules, tools=failing), REGISTRY["slo.burn_rate"],
                 {"part": "reset", "slo_target": "99.9", "page_alert": "P", "ticket_alert": "T"})
    assert not v.passed and v.feedback.startswith("P and T clear soon after the burn stops (SLO 99.9%): no - ")
    assert v.feedback.endswith("a 50x burn from minute 60 to 95: at minute 105 expected P not firing, "
                               "got firing with severity page")


def test_diagnosis_accepts_spellings_and_never_tells():
    fn = REGISTRY["tracing.diagnosis"]
    params = {"fault": "dependency-port", "dep_port": 7000}
    for given in ("cache:7001", "172.18.0.3:7001", "7001"):
        assert evaluate(Ctx({}, params=params, answers={"target": given}, addresses={"cache": "172.18.0.3"}), fn,
                        {"part": "target", "answer": "target"}).passed, given
    for wrong in ("localhost:7001", "10.0.0.9:7001", "cache"):  # the right port on the wrong host is wrong
        assert not evaluate(Ctx({}, params=params, answers={"target": wrong}, addresses={"cache": "172.18.0.3"}),
                            fn, {"part": "target", "answer": "target"}).passed, wrong
    v = evaluate(Ctx({}, params=params, answers={"target": "cache:7000"}), fn, {"part": "target", "answer": "target"})
    assert not v.passed and "7001" not in v.feedback
    slow = {"fault": "slow-syscall", "dep_port": 7000}
    assert evaluate(Ctx({}, params=slow, answers={"errno": "none"}), fn, {"part": "errno", "answer": "errno"}).passed
    assert evaluate(Ctx({}, params=slow, answers={"syscall": "openat"}), fn,
                    {"part": "syscall", "answer": "syscall"}).passed


def test_alerts_loaded_lists_what_is_missing():
    api = {"status": "success", "data": {"groups": [{"rules": [{"type": "alerting", "name": "A"},
                                                               {"type": "recording", "name": "B"}]}]}}
    probe = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": json.dumps(api)}), 0)])
    assert evaluate(Ctx({"probe": probe}), REGISTRY["slo.alerts_loaded"], {"alerts": ["A"]}).passed
    v = evaluate(Ctx({"probe": probe}), REGISTRY["slo.alerts_loaded"], {"alerts": ["A", "B"]})
    assert not v.passed and "has not loaded B" in v.feedback


def test_binary_and_user_are_compared_with_the_image_and_gated_on_health():
    import hashlib

    shipped = b"\x7fELF ledgerd"
    tools = FakeRunner([(r"sha256sum", f"{hashlib.sha256(shipped).hexdigest()}  /usr/local/sbin/ledgerd\n", 0),
                        (r"id -u", "999\n", 0)])
    up = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": "ok"}), 0)])
    down = FakeRunner([(r"urllib", json.dumps({"status": 0, "error": "ConnectionRefusedError"}), 0)])
    path = ("svc", "/usr/local/sbin/ledgerd")
    args = {"host": "svc", "path": path[1], "serving_port": 8080}
    fn = REGISTRY["tracing.binary_unchanged"]
    real = {("svc", 8080): Listener(40, 999, path[1], hashlib.sha256(shipped).hexdigest())}
    assert evaluate(Ctx({"probe": up}, files={path: shipped}, tools=tools, listeners=real), fn, args).passed
    v = evaluate(Ctx({"probe": up}, files={path: b"#!/bin/sh\n"}, tools=tools, listeners=real), fn, args)
    assert not v.passed and "differs from the shipped binary" in v.feedback
    v = evaluate(Ctx({"probe": down}, files={path: shipped}, tools=tools), fn, args)
    assert not v.passed and "not serving yet" in v.feedback

    user = REGISTRY["tracing.runs_as_user"]
    uargs = {"host": "svc", "command": "/usr/local/sbin/ledgerd", "user": "ledger", "serving_port": 8080}
    assert evaluate(Ctx({"probe": up}, tools=tools, listeners=real), user, uargs).passed
    as_root = {("svc", 8080): Listener(40, 0, path[1], hashlib.sha256(shipped).hexdigest())}
    v = evaluate(Ctx({"probe": up}, tools=tools, listeners=as_root), user, uargs)
    assert not v.passed and "uid 0" in v.feedback
