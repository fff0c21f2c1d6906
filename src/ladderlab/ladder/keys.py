"""The course's Ed25519 signing key: generated on first use, stored owner-only in the cache
directory on the grading host (never inside a container or the sandbox), used to sign the
evidence chain's anchor and the Open Badges credentials."""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ladderlab.config import Settings
from ladderlab.errors import LadderlabError


def key_file(settings: Settings) -> Path:
    return settings.cache_dir / "keys" / "course-ed25519.pem"


def load_or_create(settings: Settings) -> Ed25519PrivateKey:
    path = key_file(settings)
    if path.exists():
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            raise LadderlabError(f"{path} is readable by others (mode {mode:04o}): chmod 600 it")
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise LadderlabError(f"{path} is not an Ed25519 private key")
        return key
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return key


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_public(pem: bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem)
    if not isinstance(key, Ed25519PublicKey):
        raise LadderlabError("the issuer key is not an Ed25519 public key")
    return key
