"""TLS checks (nginx/openssl): handshakes made with Python's ssl from the probe's
network namespace, against the CA the lab names, read through the Docker API;
key files' modes from the Docker API's archive headers."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import urlsplit

from graders._net import control_free, http_get, run_json
from ladderlab.grading.checks import Context, Runner, Verdict, check, fail, ok

HANDSHAKE_SCRIPT = r"""
import json, signal, socket, ssl, sys
address, port, server_name, cafile, max_version = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
def late(*_):
    raise TimeoutError("no complete answer within 8s")
signal.signal(signal.SIGALRM, late); signal.alarm(8)  # a server that trickles bytes still ends
if cafile:
    ctx = ssl.create_default_context(cafile=cafile)
    ctx.hostname_checks_common_name = False  # as browsers: a name counts only in subjectAltName
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
    return run_json(runner, HANDSHAKE_SCRIPT, address, port, server_name, cafile, max_version)


#: Who signed the served leaf, and what the CA file holds: the root must be one self-signed CA certificate,
#: and it must not have signed the leaf itself (an intermediate does). Verification itself is the handshake's.
SIGNER_SCRIPT = r"""
import json, signal, socket, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
address, port, server_name, cafile = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def late(*_):
    raise TimeoutError("no complete answer within 8s")
signal.signal(signal.SIGALRM, late); signal.alarm(8)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((address, port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
except (ssl.SSLError, OSError) as exc:
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)[:200]})); sys.exit(0)
def signed_by(cert, issuer):
    key = issuer.public_key()
    try:
        if isinstance(key, rsa.RSAPublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, padding.PKCS1v15(), cert.signature_hash_algorithm)
        elif isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(cert.signature_hash_algorithm))
        else:
            return cert.issuer == issuer.subject
        return True
    except Exception:
        return False
try:  # both are the learner's: what cannot be read is their failure, not a crash of ours
    leaf = x509.load_der_x509_certificate(der)
    text = open(cafile, "rb").read()
    marker = b"-----BEGIN CERTIFICATE-----"
    roots = [x509.load_pem_x509_certificate(marker + part) for part in text.split(marker)[1:]]
    def is_ca(c):
        try:
            return c.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            return False
    out = {"roots": len(roots),
           "self_signed": all(c.issuer == c.subject and signed_by(c, c) for c in roots),
           "ca": all(is_ca(c) for c in roots),
           "leaf_by_root": any(leaf.issuer == c.subject or signed_by(leaf, c) for c in roots)}
except Exception as exc:
    out = {"error": "unreadable certificate: " + type(exc).__name__ + ": " + str(exc)[:160]}
print(json.dumps(out))
"""


@check
def verified(ctx: Context, *, host: str, server_name: str, ca_host: str, ca_path: str, port: int = 443,
             source: str = "probe", intermediate: bool = True) -> Verdict:
    """``host:port`` presents a certificate for ``server_name`` that the lab's CA (``ca_host:ca_path``) verifies.

    With ``intermediate`` (the default) the CA file must hold one self-signed root CA certificate that did not
    sign the served certificate itself: the chain runs leaf, intermediate (served), root."""
    ca = ctx.read_file(ca_host, ca_path)
    if ca is None:
        return fail(f"{ca_host}: {ca_path} (the CA certificate) does not exist")
    observer = ctx.observe(source)
    observer.put_file("/root/ladderlab-ca.pem", ca)
    a = handshake(observer, ctx.address(host), port, server_name, "/root/ladderlab-ca.pem")
    if not a.get("ok"):
        what = "certificate does not verify" if a.get("verify") else "TLS handshake failed"
        return fail(f"from {source}: {host}:{port} as {server_name}: {what}: {a.get('error')}")
    if intermediate:
        chain = run_json(observer, SIGNER_SCRIPT, ctx.address(host), port, server_name, "/root/ladderlab-ca.pem")
        if "error" in chain:
            return fail(f"from {source}: {host}:{port}: {chain['error']}")
        if chain.get("roots") != 1 or not chain.get("self_signed") or not chain.get("ca"):
            return fail(f"{ca_host}: {ca_path} must hold exactly one self-signed CA certificate (the root), "
                        f"not {chain.get('roots')} certificate(s) or an intermediate")
        if chain.get("leaf_by_root"):
            return fail(f"{host}:{port}: the root CA signed the server certificate itself - sign it with the "
                        f"intermediate and serve the intermediate after it")
    return ok(f"{host}:{port} serves {server_name} with a certificate the CA verifies ({a['version']})")


@check
def modern_protocols_only(ctx: Context, *, host: str, server_name: str, port: int = 443,
                          source: str = "probe") -> Verdict:
    """``host:port`` completes TLS 1.3 and TLS 1.2 handshakes and refuses TLS 1.0 and 1.1."""
    observer = ctx.observe(source)
    address = ctx.address(host)
    modern = handshake(observer, address, port, server_name)
    if not modern.get("ok"):
        return fail(f"from {source}: no TLS handshake with {host}:{port} at all ({modern.get('error')})")
    old = [v for v in ("TLSv1", "TLSv1_1") if handshake(observer, address, port, server_name, "", v).get("ok")]
    if old:
        return fail(f"from {source}: {host}:{port} still accepts {', '.join(old).replace('_', '.')} - "
                    f"set ssl_protocols TLSv1.2 TLSv1.3")
    tls12 = handshake(observer, address, port, server_name, "", "TLSv1_2")
    missing = [v for v, a in (("TLS 1.3", modern if modern.get("version") == "TLSv1.3" else {}),
                              ("TLS 1.2", tls12 if tls12.get("version") == "TLSv1.2" else {})) if not a.get("ok")]
    if missing:
        return fail(f"from {source}: {host}:{port} does not complete a {' or '.join(missing)} handshake - "
                    f"both TLS 1.2 and TLS 1.3 must work")
    return ok(f"{host}:{port} speaks TLS 1.3 and 1.2 and refuses TLS 1.0/1.1")


def _https_to(location: str, server_name: str, target: str = "/") -> bool:
    """``location`` is an https URL for exactly ``server_name`` (default port) and the same ``target`` (path and
    query), parsed, not prefix-matched (``https://name.evil.example/`` starts with ``https://name`` too)."""
    try:
        url = urlsplit(location)
        port = url.port
    except ValueError:
        return False
    want = urlsplit(target)
    same = (url.path or "/") == want.path and url.query == want.query
    return url.scheme == "https" and (url.hostname or "") == server_name.lower() and port in (None, 443) and same


@check
def redirects_to_https(ctx: Context, *, host: str, server_name: str, source: str = "probe") -> Verdict:
    """Plain HTTP for ``server_name`` answers with a permanent redirect to the same URL over https:
    for ``/`` and for a deeper path with a query (a redirect that drops them sends every link to the home page)."""
    deep = f"/ladderlab/{secrets.token_hex(4)}/page?item={secrets.token_hex(2)}"
    for target in ("/", deep):
        answer = http_get(ctx.observe(source), f"http://{ctx.address(host)}{target}", headers={"Host": server_name},
                          follow=False)
        status = answer.get("status")
        location = control_free(str(answer.get("location") or ""), f"the Location header of http://{server_name}/")
        if status not in (301, 308) or not _https_to(location, server_name, target):
            return fail(f"from {source}: http://{server_name}{target} answers {status} {location or ''} - redirect "
                        f"it permanently (301) to https://{server_name}{target}")
    return ok(f"http://{server_name}/... redirects permanently to the same URL over https")


@check
def key_private(ctx: Context, *, host: str, path: str) -> Verdict:
    """The private key at ``path`` is readable by its owner only and owned by root."""
    st = ctx.stat(host, path)
    if st is None:
        return fail(f"{host}: {path} does not exist")
    if st.mode & 0o077 or st.uid != 0:
        return fail(f"{host}: {path} is mode {st.mode:04o} owned by uid {st.uid} - make it 0600 (or 0400), root")
    return ok(f"{host}: {path} is {st.mode:04o}, root only")


CERT_SCRIPT = r"""
import json, signal, socket, ssl, sys
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
address, port, server_name = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def late(*_):
    raise TimeoutError("no complete answer within 8s")
signal.signal(signal.SIGALRM, late); signal.alarm(8)  # a server that trickles bytes still ends
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    with socket.create_connection((address, port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            der = s.getpeercert(binary_form=True)
except (ssl.SSLError, OSError) as exc:
    print(json.dumps({"error": type(exc).__name__ + ": " + str(exc)[:200]})); sys.exit(0)
try:  # the certificate is the learner's: one that cannot be read is their failure, not a crash of ours
    cert = x509.load_der_x509_certificate(der)
    key = cert.public_key()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.DNSName)
    except x509.ExtensionNotFound:
        san = []
    out = {"san": san, "not_after": cert.not_valid_after.isoformat(), "not_before": cert.not_valid_before.isoformat(),
           "signature_hash": cert.signature_hash_algorithm.name if cert.signature_hash_algorithm else "",
           "key": "rsa" if isinstance(key, rsa.RSAPublicKey) else "other",
           "bits": getattr(key, "key_size", 0), "curve": ""}
    if isinstance(key, ec.EllipticCurvePublicKey):
        out.update(key="ec", curve=key.curve.name)
except Exception as exc:
    out = {"error": "unreadable certificate: " + type(exc).__name__ + ": " + str(exc)[:160]}
print(json.dumps(out))
"""

HSTS_SCRIPT = r"""
import http.client, json, signal, ssl, sys
address, server_name = sys.argv[1], sys.argv[2]
def late(*_):
    raise TimeoutError("no complete answer within 8s")
signal.signal(signal.SIGALRM, late); signal.alarm(8)  # a server that trickles bytes still ends
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
try:
    c = http.client.HTTPSConnection(address, 443, context=ctx, timeout=3)
    c.request("GET", "/", headers={"Host": server_name})
    r = c.getresponse()
    print(json.dumps({"status": r.status, "hsts": r.getheader("Strict-Transport-Security") or ""}))
except Exception as exc:
    print(json.dumps({"status": 0, "error": type(exc).__name__ + ": " + str(exc)[:200]}))
"""

#: TLS 1.2 suites without forward secrecy (RSA key exchange) or with CBC/SHA-1: a strong server refuses them all.
WEAK_SUITES = "AES128-SHA:AES256-SHA:AES128-SHA256:AES256-SHA256:AES128-GCM-SHA256:AES256-GCM-SHA384:" \
              "ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:DES-CBC3-SHA:" \
              "ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA384:" \
              "DHE-RSA-AES128-SHA:DHE-RSA-AES256-SHA:DHE-RSA-AES128-SHA256:DHE-RSA-AES256-SHA256:" \
              "CAMELLIA128-SHA:CAMELLIA256-SHA:AES128-CCM:AES256-CCM"

WEAK_SCRIPT = r"""
import json, signal, socket, ssl, sys
address, port, server_name, suites = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
def late(*_):
    raise TimeoutError("no complete answer within 8s")
signal.signal(signal.SIGALRM, late); signal.alarm(8)  # a server that trickles bytes still ends
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
ctx.maximum_version = ssl.TLSVersion.TLSv1_2
ctx.set_ciphers(suites + ":@SECLEVEL=0")
try:
    with socket.create_connection((address, port), timeout=3) as raw:
        with ctx.wrap_socket(raw, server_hostname=server_name) as s:
            print(json.dumps({"ok": True, "cipher": s.cipher()[0]}))
except (ssl.SSLError, OSError) as exc:
    print(json.dumps({"ok": False, "error": type(exc).__name__}))
"""


@check
def certificate_sound(ctx: Context, *, host: str, server_name: str, port: int = 443,
                      source: str = "probe") -> Verdict:
    """The served certificate names ``server_name`` in its SAN, has an RSA >= 2048 or P-256/P-384 key, and
    is signed with SHA-256 or better."""
    c = run_json(ctx.observe(source), CERT_SCRIPT, ctx.address(host), port, server_name)
    if "error" in c:
        return fail(f"from {source}: no certificate from {host}:{port} ({c['error']})")
    problems = []
    if server_name.lower() not in [s.lower() for s in c.get("san", [])]:
        problems.append(f"its subjectAltName does not list {server_name} (clients ignore the CN)")
    strong_key = (c.get("key") == "rsa" and int(c.get("bits", 0)) >= 2048) or \
        (c.get("key") == "ec" and c.get("curve") in ("secp256r1", "secp384r1"))
    if not strong_key:
        problems.append(f"its key is {c.get('key')} {c.get('bits') or c.get('curve')} (use RSA >= 2048 or P-256)")
    if c.get("signature_hash") in ("sha1", "md5", ""):
        problems.append(f"it is signed with {c.get('signature_hash') or 'an unknown hash'}")
    if problems:
        return fail(f"{host}:{port}: the certificate: {'; '.join(problems)}")
    return ok(f"{host}:{port}: certificate for {server_name}, {c['key']} {c.get('bits') or c.get('curve')}, "
              f"{c['signature_hash']}")


@check
def strong_ciphers(ctx: Context, *, host: str, server_name: str, port: int = 443, source: str = "probe") -> Verdict:
    """``host:port`` speaks TLS, and a TLS 1.2 client offering only suites without forward secrecy or
    with CBC cannot connect."""
    observer = ctx.observe(source)
    modern = handshake(observer, ctx.address(host), port, server_name)
    if not modern.get("ok"):
        return fail(f"from {source}: no TLS handshake with {host}:{port} at all ({modern.get('error')})")
    a = run_json(observer, WEAK_SCRIPT, ctx.address(host), port, server_name, WEAK_SUITES)
    if a.get("ok"):
        return fail(f"from {source}: {host}:{port} accepts the weak suite {a.get('cipher')} - allow only ECDHE "
                    f"with AES-GCM or ChaCha20 (ssl_ciphers)")
    return ok(f"{host}:{port} refuses TLS 1.2 suites without forward secrecy or with CBC")


@check
def hsts(ctx: Context, *, host: str, server_name: str, min_age: int = 15552000, source: str = "probe") -> Verdict:
    """HTTPS answers carry Strict-Transport-Security with max-age of at least ``min_age`` seconds."""
    a = run_json(ctx.observe(source), HSTS_SCRIPT, ctx.address(host), server_name)
    if a.get("status", 0) == 0:
        return fail(f"from {source}: no HTTPS answer from {host} ({a.get('error')})")
    header = control_free(str(a.get("hsts", "")), f"the Strict-Transport-Security header of {host}")
    age = next((int(part.split("=", 1)[1]) for part in header.replace(" ", "").split(";")
                if part.lower().startswith("max-age=") and part.split("=", 1)[1].isdigit()), None)
    if age is None:
        return fail(f"from {source}: https://{server_name}/ sends no Strict-Transport-Security header "
                    f"(add_header ... always)")
    if age < min_age:
        return fail(f"from {source}: HSTS max-age is {age}s, less than {min_age}s")
    return ok(f"https://{server_name}/ sends HSTS, max-age {age}s")
