#!/usr/bin/env python3
"""A fleet of TLS endpoints on this host, for trying (and judging) a certificate-expiry checker.

    tlsfleet.py DIR SPEC_JSON

SPEC_JSON: {"endpoints": [{"port": 9001, "kind": "tls", "days": 40.5}, ...]}, each endpoint one of
  tls      a certificate for "localhost" signed by DIR/ca.pem, expiring in "days" days (negative: expired)
  wrong    a certificate for another name, signed by DIR/ca.pem
  self     a self-signed certificate for "localhost" (no CA vouches for it)
  silent   accepts TCP connections and never says a word
Writes DIR/ca.pem (the CA to trust), serves every endpoint on 0.0.0.0, prints "ready" and runs until killed.
"""

import datetime as dt
import json
import os
import socket
import ssl
import sys
import threading
import time

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

NOW = dt.datetime.now(dt.timezone.utc)


def name(common):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def certificate(subject, key, issuer, issuer_key, not_after, dns=None, ca=False):
    builder = (x509.CertificateBuilder().subject_name(name(subject)).issuer_name(name(issuer))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(min(NOW, not_after) - dt.timedelta(days=60)).not_valid_after(not_after)
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if dns:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(dns)]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(cert, key):
    return (cert.public_bytes(serialization.Encoding.PEM)
            + key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()))


def serve_tls(sock, path):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(path)
    while True:
        conn, _ = sock.accept()
        threading.Thread(target=handshake, args=(context, conn), daemon=True).start()


def handshake(context, conn):
    conn.settimeout(10)
    try:
        with context.wrap_socket(conn, server_side=True) as tls:
            tls.recv(1)
    except (OSError, ValueError):
        pass
    finally:
        conn.close()


def serve_silent(sock):
    held = []
    while True:
        conn, _ = sock.accept()
        held.append(conn)  # never answered, closed when the fleet stops


def main():
    folder, spec = sys.argv[1], json.loads(sys.argv[2])
    os.makedirs(folder, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = certificate("Fleet CA", ca_key, "Fleet CA", ca_key, NOW + dt.timedelta(days=3650), ca=True)
    with open(os.path.join(folder, "ca.pem"), "wb") as fh:
        fh.write(ca.public_bytes(serialization.Encoding.PEM))
    for endpoint in spec["endpoints"]:
        port, kind = int(endpoint["port"]), endpoint["kind"]
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("0.0.0.0", port))
        sock.listen(64)
        if kind == "silent":
            threading.Thread(target=serve_silent, args=(sock,), daemon=True).start()
            continue
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = NOW + dt.timedelta(days=float(endpoint.get("days", 90)))
        if kind == "self":
            cert = certificate("localhost", key, "localhost", key, not_after, dns="localhost")
        else:
            dns = "localhost" if kind == "tls" else "elsewhere.invalid"
            cert = certificate(dns, key, "Fleet CA", ca_key, not_after, dns=dns)
        path = os.path.join(folder, f"{port}.pem")
        with open(path, "wb") as fh:
            fh.write(pem(cert, key))
        threading.Thread(target=serve_tls, args=(sock, path), daemon=True).start()
    print("ready", flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
