"""DNS checks (bind9): the server's answers, asked with dnspython from the probe's
network namespace; the zone file validated with named-checkzone from the dns
host's *image* (not the host, whose binaries the learner controls)."""

from __future__ import annotations

import secrets
from typing import Any

from graders._net import control_free, run_json
from ladderlab.errors import CommandTimeout
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

QUERY_SCRIPT = r"""
import json, sys
import dns.exception, dns.flags, dns.message, dns.query, dns.rcode, dns.rdatatype
server, name, rtype, rd = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
q = dns.message.make_query(name, rtype)
if not rd:
    q.flags &= ~dns.flags.RD
try:
    r = dns.query.udp(q, server, timeout=2.0)
except dns.exception.Timeout:
    print(json.dumps({"error": "no answer within 2s"})); sys.exit(0)
except Exception as exc:
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)[:200]})); sys.exit(0)
def rrs(section):
    return [{"name": rr.name.to_text(), "type": dns.rdatatype.to_text(rr.rdtype), "ttl": rr.ttl,
             "data": sorted(x.to_text() for x in rr)} for rr in section]
print(json.dumps({"rcode": dns.rcode.to_text(r.rcode()), "aa": bool(r.flags & dns.flags.AA),
                  "ra": bool(r.flags & dns.flags.RA), "answer": rrs(r.answer), "authority": rrs(r.authority)}))
"""


def fqdn(name: str) -> str:
    return name if name.endswith(".") else name + "."


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _texts(v)]
    if isinstance(value, list):
        return [t for v in value for t in _texts(v)]
    return []


def query(runner: Runner, server: str, name: str, rtype: str, *, recursion: bool = False) -> dict[str, Any]:
    """The server's answer as dnspython reads it (names and record data in presentation form, where
    dnspython already escapes unprintable bytes); :class:`LearnerState` if a control character got
    through anyway (it could forge the record's text)."""
    answer = run_json(runner, QUERY_SCRIPT, server, name, rtype, "1" if recursion else "0", timeout=15)
    for text in _texts({k: v for k, v in answer.items() if k != "error"}):
        control_free(text, f"{server}'s answer for {name} {rtype}")
    return answer


def _values(answer: dict[str, Any], name: str, rtype: str) -> list[str]:
    for rr in answer.get("answer", []):
        if rr.get("name", "").lower() == fqdn(name).lower() and rr.get("type") == rtype:
            return sorted(str(v).lower() for v in rr.get("data", []))
    return []


@check
def authoritative(ctx: Context, *, server: str, zone: str, primary: str | None = None,
                  source: str = "probe") -> Verdict:
    """``server`` answers authoritatively (AA) for ``zone``'s SOA, which names ``primary`` (when given) as the
    zone's primary name server."""
    a = query(ctx.observe(source), ctx.address(server), zone, "SOA")
    if "error" in a:
        return fail(f"from {source}: {server} did not answer for {zone} SOA ({a['error']})")
    soa = _values(a, zone, "SOA")
    if a["rcode"] != "NOERROR" or not soa:
        return fail(f"from {source}: {server} answers {a['rcode']} without an SOA for {zone} - is the zone loaded?")
    if not a["aa"]:
        return fail(f"from {source}: {server} answers for {zone} but not authoritatively (no AA flag)")
    mname = soa[0].split()[0] if soa[0].split() else ""
    if primary is not None and mname != fqdn(primary).lower():
        return fail(f"from {source}: the SOA of {zone} names {mname} as the primary name server, not "
                    f"{fqdn(primary)}")
    return ok(f"{server} is authoritative for {zone}")


@check
def record(ctx: Context, *, server: str, name: str, rtype: str, values: list[str] | None = None,
           host: str | None = None, target_host: str | None = None, source: str = "probe") -> Verdict:
    """``name``/``rtype`` resolves at ``server`` to exactly ``values`` (or to ``host``'s address), authoritatively;
    with ``target_host``, every name the records point to (an NS's server, an MX's exchange) has an A record at
    ``server`` with exactly ``target_host``'s address."""
    want = sorted(v.lower() for v in (values or [])) + ([ctx.address(host)] if host else [])
    a = query(ctx.observe(source), ctx.address(server), name, rtype)
    if "error" in a:
        return fail(f"from {source}: {server} did not answer {name} {rtype} ({a['error']})")
    got = _values(a, name, rtype)
    if not got:
        return fail(f"from {source}: {name} {rtype} at {server}: {a['rcode']}, no {rtype} record")
    if sorted(want) != got:
        return fail(f"from {source}: {name} {rtype} at {server} is {', '.join(got)}, not {', '.join(sorted(want))}")
    if not a["aa"]:
        return fail(f"from {source}: {name} {rtype} answered without the AA flag (not from the zone)")
    if target_host is not None:
        address = ctx.address(target_host)
        for target in sorted({v.split()[-1] for v in got}):
            t = query(ctx.observe(source), ctx.address(server), target, "A")
            addresses = _values(t, target, "A") if "error" not in t else []
            if addresses != [address] or not t.get("aa"):
                return fail(f"from {source}: {target} (the target of {name} {rtype}) has A "
                            f"{', '.join(addresses) or 'none'} at {server}, not {target_host}'s address")
    return ok(f"{name} {rtype} -> {', '.join(got)}")


@check
def not_open_resolver(ctx: Context, *, server: str, name: str = "example.com", source: str = "probe") -> Verdict:
    """``server`` refuses recursion for names outside its zones (it is not an open resolver)."""
    a = query(ctx.observe(source), ctx.address(server), name, "A", recursion=True)
    if "error" in a:
        return fail(f"from {source}: {server} gave no answer to a recursive query for {name} ({a['error']}): "
                    f"it is trying to recurse for others, or it is down - set recursion no")
    if a["ra"] or a.get("answer"):
        return fail(f"from {source}: {server} offers recursion for {name} (RA set) - set recursion no / "
                    f"allow-recursion {{ none; }}")
    return ok(f"{server} does not recurse for others ({a['rcode']})")


@check
def zone_valid(ctx: Context, *, host: str, zone: str, path: str) -> Verdict:
    """The zone file at ``path`` on ``host`` passes named-checkzone (run from the host's image)."""
    data = ctx.read_file(host, path)
    if data is None:
        return fail(f"{host}: {path} does not exist")
    tools = ctx.tools(host)
    workdir = f"/root/zone-{secrets.token_hex(6)}"  # checks share the tools container
    tools.put_file(f"{workdir}/zone.db", data)
    try:
        result = tools.run("named-checkzone -q %s %s/zone.db || named-checkzone %s %s/zone.db", zone, workdir,
                           zone, workdir, timeout=30)
    except CommandTimeout:  # the tool is the image's, the input the learner's: an honest zone checks in ~1 s
        return fail(f"{host}: named-checkzone did not finish checking {path} within 30 s - simplify the zone")
    if result.failed:
        lines = [ln for ln in (result.stdout + result.stderr).splitlines() if ln.strip()]
        return fail(f"{host}: {path} is not a valid zone for {zone}: {lines[0] if lines else 'rejected'}")
    return ok(f"{host}: {path} is a valid zone for {zone}")


def reverse_name(address: str) -> str:
    """``192.168.144.4`` -> ``4.144.168.192.in-addr.arpa``."""
    return ".".join(reversed(address.split("."))) + ".in-addr.arpa"


@check
def ptr(ctx: Context, *, server: str, host: str, name: str, zone_octets: int | None = None,
        source: str = "probe") -> Verdict:
    """The reverse lookup of ``host``'s address at ``server`` gives ``name``, authoritatively; with
    ``zone_octets`` (3: the /24), ``server`` is authoritative for the reverse zone of that many leading octets."""
    address = ctx.address(host)
    rname = reverse_name(address)
    if zone_octets is not None:
        rzone = reverse_name(".".join(address.split(".")[:zone_octets]))
        z = query(ctx.observe(source), ctx.address(server), rzone, "SOA")
        if "error" in z or not _values(z, rzone, "SOA") or not z.get("aa"):
            return fail(f"from {source}: {server} is not authoritative for the reverse zone {rzone} "
                        f"({z.get('error') or z.get('rcode')}) - serve the whole /{8 * zone_octets} there")
    a = query(ctx.observe(source), ctx.address(server), rname, "PTR")
    if "error" in a:
        return fail(f"from {source}: {server} did not answer the reverse lookup of {address} ({a['error']})")
    got = _values(a, rname, "PTR")
    if not got:
        return fail(f"from {source}: no PTR for {address} at {server} ({a['rcode']}) - serve the reverse zone "
                    f"{rname.split('.', 1)[1]}")
    if got != [fqdn(name).lower()]:
        return fail(f"from {source}: {address} reverses to {', '.join(got)}, not {fqdn(name)}")
    if not a["aa"]:
        return fail(f"from {source}: the PTR for {address} is not authoritative")
    return ok(f"{address} reverses to {fqdn(name)}")


@check
def soa_serial_sane(ctx: Context, *, server: str, zone: str, source: str = "probe") -> Verdict:
    """The zone's SOA serial uses the date convention YYYYMMDDnn with a real date."""
    import datetime

    a = query(ctx.observe(source), ctx.address(server), zone, "SOA")
    soa = _values(a, zone, "SOA") if "error" not in a else []
    if not soa:
        return fail(f"from {source}: no SOA for {zone} at {server}")
    fields = soa[0].split()
    serial = fields[2] if len(fields) >= 3 else ""
    try:
        day = datetime.datetime.strptime(serial[:8], "%Y%m%d").date()
        good = len(serial) == 10 and serial.isdigit() and 2000 <= day.year <= 2100
    except ValueError:
        good = False
    if not good:
        return fail(f"{zone}: SOA serial {serial or '?'} is not YYYYMMDDnn (e.g. 2026112201) - "
                    f"secondaries compare serials, so use the date convention")
    return ok(f"{zone}: SOA serial {serial}")
