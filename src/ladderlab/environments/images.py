"""Images: a standard Debian base (pulled, or bootstrapped from Debian's packages),
and every image the environments name, built from their Dockerfiles and cached
by content.

Layout::

    environments/_common/images/<name>/Dockerfile   shared images (base, probe)
    environments/<env>/images/<name>/Dockerfile     images of one environment

``base`` starts ``FROM debian:bookworm``; every other Dockerfile starts
``ARG LADDERLAB_BASE`` / ``FROM ${LADDERLAB_BASE}`` and gets the exact tag of
the base it was hashed against. A tag is ``ladderlab/<name>:<content hash>``:
the hash covers every file of the build context, the CA bundle passed in and
the parent image, so an unchanged image is never rebuilt.

The host's CA bundle (``LADDERLAB_CA_BUNDLE``, default the host's own) is put in
every build context as ``ladderlab-ca.crt`` (empty when disabled). Dockerfiles
that run pip use it: ``RUN PIP_CERT=/etc/ladderlab/ca.crt pip install ...``.
That is what users behind a TLS-intercepting proxy need.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import docker
from docker.errors import APIError, DockerException, ImageNotFound

from ladderlab.config import Settings
from ladderlab.environments.engine import apt_install
from ladderlab.environments.spec import discover, load_env_spec
from ladderlab.errors import EngineUnavailable, ImageError, UsageError

Say = Callable[[str], None]
COMMON = "_common"
BASE = "base"
HASH_VERSION = "ladderlab-image-v1"
CA_FILE = "ladderlab-ca.crt"
#: Images grading needs whatever environments are named: observers share a lab host's
#: network namespace with trusted tools (probe); the sandbox runs learner notebooks (runner).
TOOL_IMAGES = ("probe", "runner")


@dataclass(frozen=True)
class ImageRef:
    """One image to build: its short name (``probe``, ``firewall-target``), its folder, its tag."""

    name: str
    directory: Path
    tag: str
    parent: str  # tag (or base image id) it builds on

    @property
    def repository(self) -> str:
        return self.tag.rsplit(":", 1)[0]


def image_dir(settings: Settings, env: str, image: str) -> tuple[str, Path]:
    """Where the image ``image`` named by environment ``env`` lives, and its full name."""
    own = settings.environments_dir / env / "images" / image
    shared = settings.environments_dir / COMMON / "images" / image
    if (own / "Dockerfile").is_file():
        return f"{env}-{image}", own
    if (shared / "Dockerfile").is_file():
        return image, shared
    raise UsageError(f"environments/{env}/env.yaml names image {image!r}, but neither "
                     f"environments/{env}/images/{image}/Dockerfile nor "
                     f"environments/{COMMON}/images/{image}/Dockerfile exists")


def _context_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*") if p.is_file() and "__pycache__" not in p.parts)


def ca_bytes(settings: Settings) -> bytes:
    return settings.ca_bundle.read_bytes() if settings.ca_bundle else b""


def content_hash(directory: Path, ca: bytes, parent: str) -> str:
    h = hashlib.sha256()
    for part in (HASH_VERSION, parent, hashlib.sha256(ca).hexdigest()):
        h.update(part.encode() + b"\0")
    for path in _context_files(directory):
        h.update(path.relative_to(directory).as_posix().encode() + b"\0")
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def base_image_id(client: docker.DockerClient, settings: Settings) -> str | None:
    try:
        return str(client.images.get(settings.base_image).id)
    except ImageNotFound:
        return None


def _ref(name: str, directory: Path, ca: bytes, parent: str) -> ImageRef:
    return ImageRef(name, directory, f"ladderlab/{name}:{content_hash(directory, ca, parent)[:16]}", parent)


def _base_ref(settings: Settings, ca: bytes, debian_id: str) -> ImageRef:
    return _ref(BASE, settings.environments_dir / COMMON / "images" / BASE, ca, debian_id)


def plan(settings: Settings, envs: Iterable[str] | None, debian_id: str) -> list[ImageRef]:
    """Every image the named environments (default: all) need, base first."""
    found = discover(settings.environments_dir)
    names = list(envs) if envs else sorted(found)
    unknown = [n for n in names if n not in found]
    if unknown:
        raise UsageError(f"unknown environment {', '.join(unknown)} (known: {', '.join(sorted(found))})")
    ca = ca_bytes(settings)
    base = _base_ref(settings, ca, debian_id)
    refs: dict[str, ImageRef] = {BASE: base}
    for tool in TOOL_IMAGES:
        refs[tool] = _ref(tool, settings.environments_dir / COMMON / "images" / tool, ca, base.tag)
    for env in names:
        spec = load_env_spec(found[env])
        for host in spec.hosts.values():
            full, directory = image_dir(settings, env, host.image)
            if full not in refs:
                refs[full] = _ref(full, directory, ca, base.tag)
    return list(refs.values())


def image_tags(settings: Settings, client: docker.DockerClient, env: str, images: Iterable[str]) -> dict[str, str]:
    """The tags the named images of ``env`` have now (whether or not they are built)."""
    ca = ca_bytes(settings)
    base = _base_ref(settings, ca, base_image_id(client, settings) or "missing")
    out = {}
    for image in images:
        if image == BASE:
            out[image] = base.tag
            continue
        full, directory = image_dir(settings, env, image)
        out[image] = _ref(full, directory, ca, base.tag).tag
    return out


def tool_image(settings: Settings, client: docker.DockerClient, name: str) -> str:
    """The tag of a grading tool image (``probe``, ``runner``); raise if it is not built."""
    ca = ca_bytes(settings)
    base = _base_ref(settings, ca, base_image_id(client, settings) or "missing")
    tag = _ref(name, settings.environments_dir / COMMON / "images" / name, ca, base.tag).tag
    if not exists(client, tag):
        raise ImageError(f"image {tag} is not built\nFix: ladderlab images build")
    return tag


def exists(client: docker.DockerClient, tag: str) -> bool:
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True


# --- the Debian base --------------------------------------------------------------------------


def host_apt_mirror(root: Path = Path("/")) -> str | None:
    """The Debian mirror the host's apt uses (deb822 ``.sources`` or one-line ``.list``)."""
    files = [root / "etc/apt/sources.list", *sorted((root / "etc/apt/sources.list.d").glob("*.list")),
             *sorted((root / "etc/apt/sources.list.d").glob("*.sources"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.M))
                if fields.get("Enabled", "yes") == "no" or "deb" not in fields.get("Types", "").split():
                    continue
                suites = fields.get("Suites", "").split()
                if any(s in ("bookworm", "stable") for s in suites):
                    return fields.get("URIs", "").split()[0] if fields.get("URIs") else None
        else:
            for line in text.splitlines():
                m = re.match(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(bookworm|stable)\s", line + " ")
                if m:
                    return m.group(1)
    return None


def ensure_base(client: docker.DockerClient, settings: Settings, say: Say) -> str:
    """Make sure the standard Debian base exists locally; return its image id."""
    found = base_image_id(client, settings)
    if found:
        return found
    repo, _, tag = settings.base_image.partition(":")
    say(f"pulling {settings.base_image}")
    try:
        client.images.pull(repo, tag=tag or "latest")
        found = base_image_id(client, settings)
        if found:
            return found
    except DockerException as exc:
        say(f"pull failed ({str(exc).splitlines()[0][:160]}); bootstrapping the base from Debian's packages")
    bootstrap_base(client, settings, say)
    found = base_image_id(client, settings)
    if not found:
        raise ImageError(f"bootstrapped {settings.base_image} but the engine does not list it")
    return found


def bootstrap_base(client: docker.DockerClient, settings: Settings, say: Say) -> None:
    """debootstrap a minimal bookworm and ``docker import`` it under the base tag."""
    if os.geteuid() != 0:
        raise ImageError(
            f"{settings.base_image} cannot be pulled and bootstrapping it needs root (debootstrap).\n"
            f"Fix: run `sudo ladderlab images build`, or load the image yourself "
            f"(docker load / docker pull {settings.base_image}) and run again.")
    if shutil.which("debootstrap") is None:
        if shutil.which("apt-get") is None:
            raise ImageError("debootstrap is missing and there is no apt-get to install it; install debootstrap")
        try:
            apt_install(["debootstrap"], settings, say)
        except EngineUnavailable as exc:
            raise ImageError(str(exc)) from None
    mirror = settings.apt_mirror or host_apt_mirror()
    if not mirror:
        raise ImageError("no Debian mirror: the host's apt sources name none for bookworm; "
                         "set LADDERLAB_APT_MIRROR to your mirror's URL")
    work = settings.cache_dir / "bootstrap"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "debootstrap.log"
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    started = time.monotonic()
    try:
        say(f"debootstrap --variant=minbase bookworm from {mirror} (log: {log})")
        with log.open("wb") as fh:
            rc = subprocess.call(["debootstrap", "--variant=minbase", "bookworm", str(rootfs), mirror],
                                 stdout=fh, stderr=subprocess.STDOUT)
        if rc != 0:
            raise ImageError(f"debootstrap failed (exit {rc}); see {log}",
                             log.read_text(errors="replace")[-2000:])
        for junk in ("var/lib/apt/lists", "var/cache/apt/archives"):
            for child in (rootfs / junk).glob("*"):
                if child.is_file():
                    child.unlink()
        say(f"importing the root filesystem as {settings.base_image}")
        tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        repo, _, tag = settings.base_image.partition(":")
        assert tar.stdout is not None
        client.api.import_image_from_stream(tar.stdout, repository=repo, tag=tag or "latest",
                                            changes=['CMD ["bash"]', "LABEL io.ladderlab.bootstrapped=1"])
        if tar.wait() != 0:
            raise ImageError("tar of the bootstrapped root filesystem failed")
        say(f"bootstrapped {settings.base_image} in {time.monotonic() - started:.0f}s")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


# --- building ---------------------------------------------------------------------------------


def _context(ref: ImageRef, ca: bytes) -> io.BytesIO:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in _context_files(ref.directory):
            info = tar.gettarinfo(str(path), arcname=path.relative_to(ref.directory).as_posix())
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = 0
            with path.open("rb") as fh:
                tar.addfile(info, fh)
        info = tarfile.TarInfo(CA_FILE)
        info.size = len(ca)
        info.mode = 0o644
        tar.addfile(info, io.BytesIO(ca))
    buf.seek(0)
    return buf


def build_one(client: docker.DockerClient, settings: Settings, ref: ImageRef, say: Say,
              no_cache: bool = False) -> None:
    logs = settings.cache_dir / "build"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{ref.name}.log"
    buildargs = {} if ref.name == BASE else {"LADDERLAB_BASE": ref.parent}
    lines: list[str] = []
    try:
        stream = client.api.build(fileobj=_context(ref, ca_bytes(settings)), custom_context=True, tag=ref.tag,
                                  buildargs=buildargs, rm=True, forcerm=True, decode=True, nocache=no_cache,
                                  labels={"io.ladderlab.image": ref.name})
        error = ""
        with log.open("w") as fh:
            for chunk in stream:  # read to the end, so the daemon finishes (and removes) the failed step
                if "error" in chunk:
                    error = str(chunk["error"]).strip()
                    fh.write(error)
                    continue
                text = str(chunk.get("stream", ""))
                if text:
                    fh.write(text)
                    lines.append(text)
                    if text.startswith("Step "):
                        say(f"  {ref.name}: {text.strip()[:120]}")
        if error:
            raise ImageError(f"building {ref.tag} failed: {error} (log: {log})", "".join(lines[-40:]))
    except APIError as exc:
        raise ImageError(f"building {ref.tag} failed: {exc.explanation or exc}", "".join(lines[-40:])) from None
    client.images.get(ref.tag).tag(ref.repository, "latest")


def build(client: docker.DockerClient, settings: Settings, envs: Iterable[str] | None, say: Say,
          no_cache: bool = False) -> list[tuple[ImageRef, str]]:
    """Build what is missing; return ``(image, "built"|"cached")`` for each image."""
    debian = ensure_base(client, settings, say)
    refs = plan(settings, envs, debian)
    results = []
    for i, ref in enumerate(refs, 1):
        if exists(client, ref.tag) and not no_cache:
            say(f"[{i}/{len(refs)}] {ref.tag} (cached)")
            results.append((ref, "cached"))
            continue
        say(f"[{i}/{len(refs)}] building {ref.tag}")
        started = time.monotonic()
        build_one(client, settings, ref, say, no_cache)
        say(f"[{i}/{len(refs)}] built {ref.tag} in {time.monotonic() - started:.0f}s")
        results.append((ref, "built"))
    return results
