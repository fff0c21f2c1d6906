"""TLS checks (nginx/openssl): handshakes made with Python's ssl from the probe's
network namespace, against the CA the lab names, read through the Docker API;
key files' modes from the Docker API's archive headers."""

from __future__ import annotations

import json
from typing import Any

from graders._net import ObservationError, http_get
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

HANDSHAKE_SCRIPT = r"""
import json, socket, ssl, sys
address, port, server_name, cafile, max_version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
else:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
if max_version:
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = getattr(ssl.TLSVersion, max_version)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
try:
    with socket.create_connection((address, port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            cert = s.getpeercert() if cafile else {}
            print(json.dumps({"ok": True, "version": s.version(), "cipher": s.cipher()[0],
                              "not_after": cert.get("notAfter", ""),
                              "san": [v for k, v in cert.get("subjectAltName", ()) if k == "DNS"]}))
except ssl.SSLCertVerificationError as exc:
    print(json.dumps({"ok": False, "verify": True, "error": exc.verify_message or str(exc)}))
except (ssl.SSLError, OSError) as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__ + ": " + str(exc)[:200]}))
"""


def handshake(runner: Runner, address: str, port: int, server_name: str, cafile: str = "",
              max_version: str = "") -> dict[str, Any]:
    result = runner.run("python3 -c %s %s %s %s %s %s", HANDSHAKE_SCRIPT, address, port, server_name, cafile,
                        max_version, timeout=20)
    if result.failed:
        raise ObservationError(f"handshake script exited {result.rc}: {result.stderr.strip()[:200]}")
    try:
        answer = json.loads(result.stdout)
    except ValueError:
        raise ObservationError(f"handshake printed {result.stdout[:100]!r}") from None
    if not isinstance(answer, dict):
        raise ObservationError(f"unexpected handshake answer {answer!r}")
    return answer


@check
def verified(ctx: Context, *, host: str, server_name: str, ca_host: str, ca_path: str, port: int = 443,
             source: str = "probe") -> Verdict:
    """``host:port`` presents a certificate for ``server_name`` that the lab's CA (``ca_host:ca_path``) verifies."""
    ca = ctx.read_file(ca_host, ca_path)
    if ca is None:
        return fail(f"{ca_host}: {ca_path} (the CA certificate) does not exist")
    observer = ctx.observe(source)
    observer.put_file("/root/ladderlab-ca.pem", ca)
    a = handshake(observer, ctx.address(host), port, server_name, "/root/ladderlab-ca.pem")
    if not a.get("ok"):
        what = "certificate does not verify" if a.get("verify") else "TLS handshake failed"
        return fail(f"from {source}: {host}:{port} as {server_name}: {what}: {a.get('error')}")
    return ok(f"{host}:{port} serves {server_name} with a certificate the CA verifies ({a['version']})")


@check
def modern_protocols_only(ctx: Context, *, host: str, server_name: str, port: int = 443,
                          source: str = "probe") -> Verdict:
    """``host:port`` completes TLS 1.2+ handshakes and refuses TLS 1.0 and 1.1."""
    observer = ctx.observe(source)
    address = ctx.address(host)
    modern = handshake(observer, address, port, server_name)
    if not modern.get("ok"):
        return fail(f"from {source}: no TLS handshake with {host}:{port} at all ({modern.get('error')})")
    old = [v for v in ("TLSv1", "TLSv1_1") if handshake(observer, address, port, server_name, "", v).get("ok")]
    if old:
        return fail(f"from {source}: {host}:{port} still accepts {', '.join(old).replace('_', '.')} - "
                    f"set ssl_protocols TLSv1.2 TLSv1.3")
    return ok(f"{host}:{port} speaks {modern['version']} and refuses TLS 1.0/1.1")


@check
def redirects_to_https(ctx: Context, *, host: str, server_name: str, source: str = "probe") -> Verdict:
    """Plain HTTP for ``server_name`` answers with a permanent redirect to https://``server_name``."""
    answer = http_get(ctx.observe(source), f"http://{ctx.address(host)}/", headers={"Host": server_name},
                      follow=False)
    status = answer.get("status")
    location = str(answer.get("location") or "")
    if status not in (301, 308) or not location.startswith(f"https://{server_name}"):
        return fail(f"from {source}: http://{server_name}/ answers {status} {location or ''} - redirect it "
                    f"permanently (301) to https://{server_name}/")
    return ok(f"http://{server_name}/ redirects to {location}")


@check
def key_private(ctx: Context, *, host: str, path: str) -> Verdict:
    """The private key at ``path`` is readable by its owner only and owned by root."""
    st = ctx.stat(host, path)
    if st is None:
        return fail(f"{host}: {path} does not exist")
    if st.mode & 0o077 or st.uid != 0:
        return fail(f"{host}: {path} is mode {st.mode:04o} owned by uid {st.uid} - make it 0600 (or 0400), root")
    return ok(f"{host}: {path} is {st.mode:04o}, root only")
