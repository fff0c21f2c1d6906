"""Hardening of the graders against a hostile learner (issue 10, findings 2, 3 and 5), without Docker:
keyed seeds, the process behind a port, parsers fed control characters, history-dependent firewall
rules, and the line between a learner's failure and the grader's error.

The same attacks run end to end against real environments in tests/tamper/test_graders_tamper.py."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import stat
import subprocess
import sys
import tarfile

import pytest

from ladderlab.config import Settings
from ladderlab.course.seeds import course_secret, derive_seed, render_params, secret_file
from ladderlab.environments.spec import ChoiceParam, IntParam
from ladderlab.errors import LadderlabError, LearnerState
from ladderlab.grading.checks import REGISTRY, CannotJudge, Listener, evaluate, load_graders

from .test_checks_unit import DENY, FakeContext, FakeRunner, qdisc, save, tcp
from .test_domain_checks_unit import Ctx

# Newlines, NULs and ANSI escape sequences: what learner text uses to forge the structure around it.
CONTROL = ["\n", "\0", "\x1b[31m", "\r", "\x85"]


@pytest.fixture(scope="module", autouse=True)
def graders(root):
    load_graders(root)


# --- finding 2: seeds and secret parameters are keyed with a course secret ------------------------

PARAMS = {"fault": ChoiceParam(type="choice", values=[f"f{i}" for i in range(16)], secret=True),
          "port": IntParam(type="int", min=1000, max=9999)}
KEY_A, KEY_B = bytes(range(32)), bytes(range(1, 33))


def test_same_inputs_same_seed_and_a_different_key_changes_seed_and_secret_params():
    assert derive_seed("c", "ada", "lab", secret=KEY_A) == derive_seed("c", "ada", "lab", secret=KEY_A)
    assert derive_seed("c", "ada", "lab", secret=KEY_A) != derive_seed("c", "ada", "lab", secret=KEY_B)
    # the seed is no secret (evidence holds it): the same seed under another key gives other secret params
    seeds = [derive_seed("c", f"l{i}", "lab", secret=KEY_A) for i in range(40)]
    a = [render_params(PARAMS, s, secret=KEY_A)["fault"] for s in seeds]
    b = [render_params(PARAMS, s, secret=KEY_B)["fault"] for s in seeds]
    assert sum(x != y for x, y in zip(a, b, strict=True)) > 20
    # public parameters stay a function of the seed alone (the learner sees them anyway)
    assert all(render_params(PARAMS, s, secret=KEY_A)["port"] == render_params(PARAMS, s, secret=KEY_B)["port"]
               for s in seeds)


def test_the_old_unkeyed_derivation_is_gone():
    with pytest.raises(TypeError):
        derive_seed("c", "ada", "lab")  # type: ignore[call-arg]
    with pytest.raises(LadderlabError):
        derive_seed("c", "ada", "lab", secret=b"short")
    old = hashlib.sha256("\0".join(("ladderlab-seed-v1", "c", "ada", "lab")).encode()).hexdigest()
    assert derive_seed("c", "ada", "lab", secret=KEY_A) != old


def test_course_secret_is_created_owner_only_reused_and_refused_when_others_can_read(tmp_path):
    settings = Settings(root=tmp_path, cache_dir=tmp_path / "cache")
    key = course_secret(settings)
    path = secret_file(settings)
    assert len(key) == 32 and course_secret(settings) == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert path.parent == settings.cache_dir / "keys"  # beside the course signing key
    other = Settings(root=tmp_path, cache_dir=tmp_path / "other")
    assert course_secret(other) != key
    os.chmod(path, 0o644)
    with pytest.raises(LadderlabError, match="readable by others"):
        course_secret(settings)
    os.chmod(path, 0o600)
    path.write_text("not hex\n")
    with pytest.raises(LadderlabError, match="not a course secret"):
        course_secret(settings)


def test_the_sandbox_package_carries_no_course_secret(tmp_path, monkeypatch):
    from ladderlab.grading.sandbox import package_tar

    settings = Settings(root=tmp_path, cache_dir=tmp_path / "cache")
    key = course_secret(settings)
    blob = package_tar({"notebook.ipynb": b"{}"})
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        names = tar.getnames()
        data = b"".join(tar.extractfile(m).read() for m in tar.getmembers() if m.isfile())  # type: ignore[union-attr]
    assert any(n.endswith("ladderlab/course/seeds.py") for n in names)  # the function ships...
    assert not any("course-seed" in n or n.endswith(".key") for n in names)  # ...the key does not
    assert key.hex().encode() not in data and key not in data


# --- finding 2: the process behind a port -----------------------------------------------------------


def test_listener_script_finds_the_socket_owner_and_hashes_its_executable():
    """The observer's script, run here against a socket this test holds (no Docker needed)."""
    from ladderlab.grading.context import _LISTENER_SCRIPT

    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(1)
        port = srv.getsockname()[1]
        out = subprocess.run([sys.executable, "-c", _LISTENER_SCRIPT, str(port), "tcp", str(1 << 28)],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    found = json.loads(out)
    holders = [h for s in found["sockets"] for h in s["holders"]]
    mine = [h for h in holders if h["pid"] == os.getpid()]
    assert mine and mine[0]["uids"][0] == os.getuid()
    exe = os.readlink("/proc/self/exe")
    assert mine[0]["exe"] == exe
    with open(exe, "rb") as fh:
        assert mine[0]["sha256"] == hashlib.sha256(fh.read()).hexdigest()


def _live(answer: dict | str, rc: int = 0):
    from ladderlab.grading.context import LiveContext

    ctx = LiveContext.__new__(LiveContext)  # only the parsing of the observer's answer, no environment
    runner = FakeRunner([(r"python3 -c", answer if isinstance(answer, str) else json.dumps(answer), rc)])
    ctx._pid_observer = lambda host: runner  # type: ignore[method-assign]
    return ctx


ANY = "0.0.0.0"  # noqa: S104 - an address in the fake observer's answer; nothing binds it


def _sock(address, *holders, loopback=False):
    return {"address": address, "loopback": loopback,
            "holders": [{"pid": p, "uids": u, "exe": e, "sha256": d} for p, u, e, d in holders]}


def test_live_listener_reads_owner_uid_and_digest_and_flags_what_differs():
    real = (40, [999, 999, 999, 999], "/usr/local/sbin/ledgerd", "ab" * 32)
    assert _live({"sockets": [], "denied": []}).listener("svc", 8080) is None
    assert _live({"sockets": [_sock("127.0.0.1", real, loopback=True)], "denied": []}).listener("svc", 8080) is None
    got = _live({"sockets": [_sock(ANY, real)], "denied": []}).listener("svc", 8080)
    assert got == Listener(40, 999, "/usr/local/sbin/ledgerd", "ab" * 32)
    # a process that can become root again counts as root
    saved_root = (40, [999, 999, 0, 999], "/usr/local/sbin/ledgerd", "ab" * 32)
    assert _live({"sockets": [_sock(ANY, saved_root)], "denied": []}).listener("svc", 8080).uid == 0
    # a stand-in on the host's address beside the real one on loopback/another socket: they differ
    stand_in = (77, [999, 999, 999, 999], "/usr/bin/python3.11", "cd" * 32)
    two = _live({"sockets": [_sock(ANY, real), _sock("::", stand_in)], "denied": []}).listener("svc", 8080)
    assert two.uid == -1 and not two.exe_sha256 and "several different processes" in two.exe
    orphan = _live({"sockets": [_sock(ANY)], "denied": []}).listener("svc", 8080)
    assert orphan.uid == -1 and "no process" in orphan.exe


@pytest.mark.parametrize("answer, rc", [("not json", 0), (json.dumps({"sockets": [{}]}), 0), ("", 1),
                                        (json.dumps({"sockets": [], "denied": [12]}), 0)])
def test_live_listener_cannot_judge_when_its_observer_fails(answer, rc):
    with pytest.raises(CannotJudge):
        _live(answer, rc).listener("svc", 8080)


SHIPPED = b"\x7fELF ledgerd"
UP = (r"urllib", json.dumps({"status": 200, "body": "ok"}), 0)


def _tracing_ctx(listener):
    tools = FakeRunner([(r"sha256sum", f"{hashlib.sha256(SHIPPED).hexdigest()}  /usr/local/sbin/ledgerd\n", 0),
                        (r"id -u", "999\n", 0)])
    return Ctx({"probe": FakeRunner([UP])}, files={("svc", "/usr/local/sbin/ledgerd"): SHIPPED}, tools=tools,
               listeners={("svc", 8080): listener})


@pytest.mark.parametrize("check, args", [
    ("tracing.http_ok", {"host": "svc", "port": 8080, "path": "/healthz", "binary": "/usr/local/sbin/ledgerd"}),
    ("tracing.runs_as_user", {"host": "svc", "command": "/usr/local/sbin/ledgerd", "user": "ledger",
                              "serving_port": 8080}),
    ("tracing.binary_unchanged", {"host": "svc", "path": "/usr/local/sbin/ledgerd", "serving_port": 8080}),
])
def test_a_stand_in_under_the_right_name_and_user_fails_health_user_and_binary(check, args):
    real = Listener(40, 999, "/usr/local/sbin/ledgerd", hashlib.sha256(SHIPPED).hexdigest())
    assert evaluate(_tracing_ctx(real), REGISTRY[check], args).passed
    # right user, right path (the learner wrote a script there), wrong executable: python runs it
    stand_in = Listener(41, 999, "/usr/bin/python3.11", hashlib.sha256(b"python").hexdigest())
    v = evaluate(_tracing_ctx(stand_in), REGISTRY[check], args)
    assert v.status == "failed" and ("not by the /usr/local/sbin/ledgerd" in v.feedback
                                     or "differs" in v.feedback), v
    for ch in CONTROL:  # a file name with control characters never reaches feedback raw
        odd = Listener(41, 999, f"/tmp/ledgerd{ch}FAKE", hashlib.sha256(b"x").hexdigest())
        v = evaluate(_tracing_ctx(odd), REGISTRY[check], args)
        assert v.status == "failed" and v.feedback.isprintable()
    v = evaluate(_tracing_ctx(None), REGISTRY[check], args)
    assert v.status == "failed" and "nothing listens" in v.feedback


def test_tracing_cannot_judge_when_the_image_lacks_the_binary_or_user():
    tools = FakeRunner([(r"sha256sum", "sha256sum: /x: No such file or directory", 1), (r"id -u", "no user", 1)])
    ctx = Ctx({"probe": FakeRunner([UP])}, tools=tools,
              listeners={("svc", 8080): Listener(40, 999, "/x", "ab" * 32)})
    v = evaluate(ctx, REGISTRY["tracing.http_ok"], {"host": "svc", "port": 8080, "binary": "/x"})
    assert v.status == "error" and "cannot hash" in v.feedback
    v = evaluate(ctx, REGISTRY["tracing.runs_as_user"], {"host": "svc", "command": "/x", "user": "nobody2",
                                                         "serving_port": 8080})
    assert v.status == "error"


# --- finding 3: learner text cannot forge what the firewall grader parses ----------------------------

OPEN_WITH = "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n{rules}COMMIT\n"
FORGED = OPEN_WITH.format(rules='-A INPUT -p tcp -m tcp --dport 1 -m comment --comment "a\nCOMMIT\n*filter\n'
                                ':INPUT DROP [0:0]" -j ACCEPT\n')


def test_the_comment_forgery_that_read_as_default_deny_is_refused():
    from graders.firewall import parse_save

    with pytest.raises(LearnerState, match=r"control character|spans several lines"):
        parse_save(FORGED)
    v = evaluate(FakeContext({("target", True): FakeRunner([save(FORGED)])}), REGISTRY["firewall.default_deny"],
                 {"host": "target"})
    assert v.status == "failed" and v.feedback.isprintable() and "cannot be judged" in v.feedback


@pytest.mark.parametrize("ch", CONTROL)
def test_control_characters_in_rule_comments_fail_every_firewall_check(ch):
    text = OPEN_WITH.format(rules=f'-A INPUT -m comment --comment "x{ch}y" -j ACCEPT\n').replace(
        ":INPUT ACCEPT", ":INPUT DROP")
    admin = FakeRunner([save(text)])
    for name, args in [("firewall.default_deny", {"host": "target"}),
                       ("firewall.loopback_allowed", {"host": "target", "port": 6000}),
                       ("firewall.closed", {"target": "target", "port": 6000, "sources": ["outsider"]})]:
        ctx = FakeContext({("target", True): admin, "target": FakeRunner([qdisc()]),
                           "outsider": FakeRunner([tcp(["filtered"])])})
        v = evaluate(ctx, REGISTRY[name], args)
        assert v.status == "failed" and v.feedback.isprintable(), (name, v)


def test_honest_comments_with_quotes_and_spaces_still_parse():
    from graders.firewall import drops_by_default, parse_save, tokens

    text = OPEN_WITH.format(rules='-A INPUT -m comment --comment "ssh \\"admin\\" access" -p tcp --dport 22 '
                                  '-j ACCEPT\n-A INPUT -j DROP\n')
    chains = parse_save(text)
    assert drops_by_default(chains["INPUT"]) and chains["INPUT"].policy == "ACCEPT"
    assert tokens(chains["INPUT"].rules[0])[3] == 'ssh "admin" access'


@pytest.mark.parametrize("bad", [
    OPEN_WITH.format(rules="") + OPEN_WITH.format(rules=""),  # a table twice
    OPEN_WITH.format(rules="-A INPUT -j ACCEPT\n:INPUT DROP [0:0]\n"),  # a chain declared after a rule
    OPEN_WITH.format(rules='-A INPUT -m comment --comment "open -j ACCEPT\n'),  # a quote never closed
])
def test_structural_forgeries_are_refused(bad):
    from graders.firewall import parse_save

    with pytest.raises(LearnerState):
        parse_save(bad)


def test_iptables_save_failing_is_ours_unless_it_names_the_learners_nft_rules():
    fn = REGISTRY["firewall.default_deny"]
    broken = FakeContext({("target", True): FakeRunner([(r"iptables-save", "iptables-save: out of memory", 1)])})
    assert evaluate(broken, fn, {"host": "target"}).status == "error"
    # iptables-nft-save 1.8.9 leaves such a table out with a comment and exits 0 (measured): never an empty table
    for said, rc in [("# Table `filter' is incompatible, use 'nft' tool.\n", 0),
                     ("# Table `filter' contains incompatible base-chains, use 'nft' tool to list them.\n" + DENY, 0),
                     ("iptables-save v1.8.9 (nf_tables): table `filter' is incompatible, use 'nft' tool.", 1)]:
        nft = FakeContext({("target", True): FakeRunner([(r"iptables-save", said, rc)])})
        v = evaluate(nft, fn, {"host": "target"})
        assert v.status == "failed" and "iptables cannot show" in v.feedback and "policy" not in v.feedback, said
    # the word in a rule's comment is the learner's text, not the tool saying a table is hidden
    worded = DENY.replace("-A INPUT -i lo -j ACCEPT", '-A INPUT -i lo -m comment --comment "# Table `filter\' is '
                                                      'incompatible" -j ACCEPT')
    assert evaluate(FakeContext({("target", True): FakeRunner([save(worded)])}), fn, {"host": "target"}).passed
    legacy = FakeContext({("target", True): FakeRunner([save(DENY + "# Warning: iptables-legacy tables present, "
                                                                    "use iptables-legacy-save to see them\n")])})
    v = evaluate(legacy, fn, {"host": "target"})
    assert v.status == "failed" and "legacy" in v.feedback


# --- finding 5: "closed" is not judged from one SYN, nor behind history-dependent rules ---------------

RECENT = ("-A INPUT -p tcp -m tcp --dport {port} -m conntrack --ctstate NEW -m recent ! --rcheck --seconds 30 "
          "--name first --mask 255.255.255.255 --rsource -m recent --set --name first --mask 255.255.255.255 "
          "--rsource -j DROP\n")


@pytest.mark.parametrize("match", ["recent", "limit", "hashlimit", "connlimit", "statistic", "time", "u32", "bpf"])
def test_closed_refuses_ports_behind_history_dependent_rules(match):
    from graders.firewall import history_dependent

    assert history_dependent(f"-p tcp --dport 6100 -m {match} --x 1 -j DROP") == f"-m {match}"
    rules = f"-A INPUT -p tcp --dport 6100 -m {match} --x 1 -j DROP\n-A INPUT -p tcp --dport 6100 -j DROP\n"
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(OPEN_WITH.format(rules=rules))]),
                       "outsider": FakeRunner([tcp(["filtered"])]), "monitor": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, REGISTRY["firewall.closed"], {"target": "target", "port": 6100, "sources": ["outsider",
                                                                                                  "monitor"]})
    assert v.status == "failed" and f"-m {match}" in v.feedback and "cannot be judged" in v.feedback


def test_history_dependent_rules_elsewhere_do_not_block_the_verdict():
    from graders.firewall import applies_to, history_dependent

    assert history_dependent('-m comment --comment "-m recent" -j DROP') is None  # words inside a comment
    assert history_dependent("-j NFQUEUE --queue-num 1") == "-j NFQUEUE"
    assert not applies_to("-p tcp --dport 22 -m limit -j ACCEPT", 6100)
    assert not applies_to("-p tcp -m multiport --dports 22,80,9000:9200 -j ACCEPT", 6100)
    assert applies_to("-p tcp -m multiport --dports 22,6000:6200 -j ACCEPT", 6100)
    assert applies_to("-p tcp ! --dport 22 -m recent --set -j ACCEPT", 6100)  # negated: may apply
    assert not applies_to("-p udp --dport 6100 -m limit -j ACCEPT", 6100)
    assert applies_to("-m statistic --mode random --probability 0.5 -j DROP", 6100)  # no port: applies
    rules = RECENT.format(port=22) + "-A INPUT -p tcp --dport 6100 -j DROP\n"
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(OPEN_WITH.format(rules=rules))]),
                       "outsider": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, REGISTRY["firewall.closed"], {"target": "target", "port": 6100, "sources": ["outsider"]})
    assert v.passed, v


def test_rules_in_other_tables_count_too():
    text = ("*raw\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n" + RECENT.format(port=6100).replace(
        "-A INPUT", "-A PREROUTING") + "COMMIT\n" + DENY)
    ctx = FakeContext({"target": FakeRunner([qdisc(), save(text)]), "outsider": FakeRunner([tcp(["filtered"])])})
    v = evaluate(ctx, REGISTRY["firewall.closed"], {"target": "target", "port": 6100, "sources": ["outsider"]})
    assert v.status == "failed" and "raw/PREROUTING" in v.feedback


def test_the_probe_retries_like_a_real_client():
    """TCP_SCRIPT run here: an open port answers at once; a closed one is tried once per attempt."""
    import time

    from graders._net import REAL_CLIENT, TCP_SCRIPT

    assert REAL_CLIENT[0] >= 3.0 and len(REAL_CLIENT) >= 2  # SYNs at 0, 1 and 3 s, then a fresh connection
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen(4)
        open_port = srv.getsockname()[1]
        with socket.socket() as spare:
            spare.bind(("127.0.0.1", 0))
            closed_port = spare.getsockname()[1]  # bound, not listening: refused
        t0 = time.monotonic()
        out = subprocess.run([sys.executable, "-c", TCP_SCRIPT, json.dumps([1.0, 0.5]),
                              json.dumps([["127.0.0.1", open_port], ["127.0.0.1", closed_port]])],
                             capture_output=True, text=True, timeout=30, check=True).stdout
    assert json.loads(out) == ["open", "refused"]
    assert time.monotonic() - t0 >= 0.2  # the refused port was tried again after a pause


# --- finding 3 in the other domains: DNS, SLO, TLS ----------------------------------------------------


@pytest.mark.parametrize("ch", CONTROL)
def test_dns_answers_with_control_characters_are_refused(ch):
    answer = {"rcode": "NOERROR", "aa": True, "ra": False, "authority": [],
              "answer": [{"name": "x.example.", "type": "TXT", "ttl": 1, "data": [f'"v{ch}1.2.3.4"']}]}
    ctx = Ctx({"probe": FakeRunner([(r"dns\.message", json.dumps(answer), 0)])})
    v = evaluate(ctx, REGISTRY["dns.record"], {"server": "dns", "name": "x.example", "rtype": "TXT",
                                               "values": ['"v1.2.3.4"']})
    assert v.status == "failed" and "control character" in v.feedback and v.feedback.isprintable()


@pytest.mark.parametrize("ch", CONTROL)
def test_prometheus_rule_names_with_control_characters_are_neutralised(ch):
    rules = [{"type": "alerting", "name": f"HighErrorRate{ch}"}, {"type": "alerting", "name": ["HighErrorRate"]}]
    api = {"status": "success", "data": {"groups": [{"rules": rules}]}}
    probe = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": json.dumps(api)}), 0)])
    v = evaluate(Ctx({"probe": probe}), REGISTRY["slo.alert_loaded"], {"alert": "HighErrorRate"})
    assert v.status == "failed" and v.feedback.isprintable()


def test_prometheus_answering_garbage_is_the_learners_failure_not_an_error():
    probe = FakeRunner([(r"urllib", json.dumps({"status": 200, "body": "<html>"}), 0)])
    v = evaluate(Ctx({"probe": probe}), REGISTRY["slo.alerts_loaded"], {"alerts": ["A"]})
    assert v.status == "failed" and "without a rules list" in v.feedback


@pytest.mark.parametrize("ch", CONTROL)
def test_rule_file_names_and_promtool_output_with_control_characters(ch):
    ctx = Ctx({}, dirs={("prometheus", "/etc/prometheus/rules"): {f"a{ch}b.yml": b"groups: []\n"}},
              tools=FakeRunner([(r"promtool", "SUCCESS", 0)]))
    v = evaluate(ctx, REGISTRY["slo.rules_valid"], {})
    assert v.status == "failed" and "control character" in v.feedback
    from graders.slo import promtool_failure

    line = promtool_failure(f"FAILED:\n    alertname: A, time: 5m,\n        exp:[\n  Labels:{{x=\"1{ch}\"}}\n")
    assert line.isprintable()


@pytest.mark.parametrize("location, good", [
    ("https://www.example.test/", True), ("https://WWW.example.test", True),
    ("https://www.example.test.evil.example/", False), ("https://www.example.test@evil.example/", False),
    ("https://www.example.test:8443/", False), ("http://www.example.test/", False),
    ("https://www.example.test\x1b[0m/", False), ("https://www.example.test\n.evil/", False),
])
def test_redirect_target_is_parsed_not_prefix_matched(location, good):
    class Probe(FakeRunner):  # ``location`` for /, a correct redirect for the deeper path the check asks next
        def run(self, command, *args, timeout=None):
            from urllib.parse import urlsplit

            from ladderlab.environments.transports import CommandResult
            url = urlsplit(str(args[1]))
            here = location if url.path == "/" else f"https://www.example.test{url.path}?{url.query}"
            return CommandResult("x", 0, json.dumps({"status": 301, "location": here}), "")

    probe = Probe()
    v = evaluate(Ctx({"probe": probe}), REGISTRY["tls.redirects_to_https"], {"host": "web",
                                                                               "server_name": "www.example.test"})
    assert v.passed is good and v.status != "error" and v.feedback.isprintable()


def test_hsts_header_with_control_characters_fails():
    probe = FakeRunner([(r"Strict-Transport", json.dumps({"status": 200, "hsts": "max-age=31536000\x1b[0m"}), 0)])
    v = evaluate(Ctx({"probe": probe}), REGISTRY["tls.hsts"], {"host": "web", "server_name": "www.example.test"})
    assert v.status == "failed" and "control character" in v.feedback


class Reads(FakeRunner):
    """Answers each ``iptables-save`` with the next of ``outputs`` (the last one again when they run out)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = list(outputs)

    def run(self, command, *args, timeout=None):
        from ladderlab.environments.transports.base import CommandResult

        self.ran.append(command)
        assert command == "iptables-save", command
        out = self.outputs.pop(0) if len(self.outputs) > 1 else self.outputs[0]
        return CommandResult(command, 0, out, "")


def test_a_read_the_tool_got_wrong_is_not_the_learners_ruleset():
    """iptables-nft-save prints what it fetched when a netlink dump fails, exit 0 (iptables 1.8.9): an empty read
    between two of the learner's default-deny is read again, never judged as a default-allow firewall."""
    from graders.firewall import SAVE_READS

    fn = REGISTRY["firewall.default_deny"]
    stamp = "# Generated by iptables-save v1.8.9 (nf_tables) on Tue Nov 24 01:33:4{} 2026\n"
    # comments and chain counters differ from read to read (probes pass meanwhile), the rules do not
    flaky = Reads(["", stamp.format(1) + DENY, stamp.format(2) + DENY.replace("[10:600]", "[12:720]")])
    assert evaluate(FakeContext({("target", True): flaky}), fn, {"host": "target"}).passed
    assert len(flaky.ran) == 3
    # a ruleset that really is empty reads the same twice: the learner's default-allow
    empty = Reads([""])
    v = evaluate(FakeContext({("target", True): empty}), fn, {"host": "target"})
    assert v.status == "failed" and "INPUT policy is ACCEPT" in v.feedback and len(empty.ran) == 2
    # one that changes at every read is the learner's too (something of theirs keeps rewriting it)
    flapping = Reads([DENY, "", DENY, "", DENY])
    v = evaluate(FakeContext({("target", True): flapping}), fn, {"host": "target"})
    assert v.status == "failed" and "changed between each" in v.feedback and len(flapping.ran) == SAVE_READS
