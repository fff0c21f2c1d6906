"""The hub's roster login (docs/hub-design.md, 2.2): one password per learner, issued by ladderlab.

``<private>/passwords.json`` maps each roster id to ``scrypt$<salt hex>$<hash hex>`` (the file is root's, 0600).
Anyone not in it cannot log in; a wrong password is refused in constant time. Any other JupyterHub
authenticator (an IdP through OAuthenticator) can replace this one; never DummyAuthenticator or
SharedPasswordAuthenticator, with which any learner logs in as any other.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import os
import secrets
from pathlib import Path
from typing import Any

from ladderlab.errors import ConfigError

N, R, P = 2**14, 8, 1


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = salt or secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P)
    return f"scrypt${salt.hex()}${digest.hex()}"


def verify(password: str, stored: str) -> bool:
    try:
        kind, salt, digest = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(password.encode(), salt=bytes.fromhex(salt), n=N, r=R, p=P)
        return hmac.compare_digest(got.hex(), digest)
    except ValueError:
        return False


@functools.cache
def _nobody() -> str:
    """A hash verified against when the name is not on the roster (made once): one scrypt per attempt, as for a
    wrong password, so the time a login takes does not tell whether a name is a learner's."""
    return hash_password(secrets.token_urlsafe(12))


def load(path: Path) -> dict[str, str]:
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(str(path), [("", f"cannot read the hub's passwords: {exc.strerror}")]) from exc
    except ValueError as exc:
        raise ConfigError(str(path), [("", f"not JSON: {exc}")]) from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ConfigError(str(path), [("", "must map each learner id to its password's hash")])
    return data


def issue(path: Path, learners: list[str]) -> dict[str, str]:
    """A new random password for each of ``learners`` (the others keep theirs); the file is rewritten
    atomically, 0600. Returns the new passwords, to be handed to the learners once: they are not kept."""
    current = load(path) if Path(path).exists() else {}
    fresh = {learner: secrets.token_urlsafe(12) for learner in learners}
    current.update({learner: hash_password(pw) for learner, pw in fresh.items()})
    tmp = Path(path).with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(current, f, indent=1, sort_keys=True)
    os.replace(tmp, path)
    return fresh


try:  # the class needs JupyterHub (the `hub` extra); the functions above do not
    from jupyterhub.auth import Authenticator
    from traitlets import Unicode
except ImportError:  # pragma: no cover
    Authenticator = None
else:
    class RosterAuthenticator(Authenticator):  # type: ignore[misc]
        """Log in with a password ladderlab issued (``ladderlab.hub.auth.issue``)."""

        passwords_file = Unicode(help="JSON: learner id -> scrypt hash").tag(config=True)

        async def authenticate(self, handler: Any, data: dict[str, str]) -> str | None:
            name, password = data.get("username", ""), data.get("password", "")
            stored = load(Path(self.passwords_file)).get(name)
            if stored is None:
                verify(password, _nobody())  # one scrypt, as for a wrong password
                return None
            return name if verify(password, stored) else None
