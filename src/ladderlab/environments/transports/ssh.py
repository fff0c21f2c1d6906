"""SSH with paramiko: a per-environment key, host keys pinned from the image
(read through the Docker API when the environment came up)."""

from __future__ import annotations

import base64
import io
import threading

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ladderlab.environments.transports.base import CommandResult, Transport
from ladderlab.errors import CommandTimeout, TransportError


def generate_key() -> tuple[str, str]:
    """A new Ed25519 key pair: (private key in OpenSSH PEM, ``ssh-ed25519 ...`` public line)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode()
    return private, public + " ladderlab\n"


_KEY_TYPES: dict[str, type[paramiko.PKey]] = {
    "ssh-ed25519": paramiko.Ed25519Key,
    "ssh-rsa": paramiko.RSAKey,
    "ecdsa-sha2-nistp256": paramiko.ECDSAKey,
}


def public_key(kind: str, blob: bytes) -> paramiko.PKey:
    """A host public key from its wire form (works with paramiko 2.x, which the sandbox has, and 3.x)."""
    try:
        return _KEY_TYPES[kind](data=blob)  # type: ignore[arg-type]  # paramiko's stubs say str; it takes bytes
    except KeyError:
        raise TransportError(f"unsupported host key type {kind!r}") from None


class SSHTransport(Transport):
    """Run commands over SSH as root.

    >>> SSHTransport("172.18.0.2", private_key=pem, host_key="ssh-ed25519 AAAA...").run("hostname")  # doctest: +SKIP
    """

    name = "ssh"

    def __init__(self, address: str, *, private_key: str, host_key: str | None, port: int = 22,
                 user: str = "root", connect_timeout: float = 10) -> None:
        self.address = address
        self.port = port
        self.user = user
        self._pkey = paramiko.Ed25519Key.from_private_key(io.StringIO(private_key))
        self._host_key = host_key
        self._connect_timeout = connect_timeout
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<ssh {self.user}@{self.address}:{self.port}>"

    def _connect(self) -> paramiko.SSHClient:
        with self._lock:
            if self._client is not None and self._client.get_transport() is not None \
                    and self._client.get_transport().is_active():  # type: ignore[union-attr]
                return self._client
            client = paramiko.SSHClient()
            if self._host_key:
                kind, blob = self._host_key.split()[:2]
                client.get_host_keys().add(f"[{self.address}]:{self.port}" if self.port != 22 else self.address,
                                           kind, public_key(kind, base64.b64decode(blob)))
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            try:
                client.connect(self.address, port=self.port, username=self.user, pkey=self._pkey,
                               look_for_keys=False, allow_agent=False, timeout=self._connect_timeout,
                               banner_timeout=self._connect_timeout, auth_timeout=self._connect_timeout)
            except (paramiko.SSHException, OSError) as exc:
                client.close()
                raise TransportError(f"{self!r}: cannot connect: {exc}") from None
            self._client = client
            return client

    def _run(self, command: str, timeout: float | None) -> CommandResult:
        client = self._connect()
        try:
            _, stdout, stderr = client.exec_command(command, timeout=timeout)
            out = stdout.read()
            err = stderr.read()
            rc = stdout.channel.recv_exit_status()
        except TimeoutError:
            raise CommandTimeout(f"{self!r}: {command!r} ran past {timeout:g}s") from None
        except paramiko.SSHException as exc:
            raise TransportError(f"{self!r}: {exc}") from None
        return CommandResult(command, rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

