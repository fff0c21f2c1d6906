"""The host CA bundle reaches builds: pip inside a build verifies TLS with it
(the case of users behind a TLS-intercepting proxy), and fails without it."""

from __future__ import annotations

import contextlib
import dataclasses

import docker.errors
import pytest

from ladderlab.environments.images import BASE, ImageRef, build_one, content_hash
from ladderlab.errors import ImageError

DOCKERFILE = """\
ARG LADDERLAB_BASE
FROM ${LADDERLAB_BASE}
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip >/dev/null
COPY ladderlab-ca.crt /etc/ladderlab/ca.crt
RUN PIP_CERT=/etc/ladderlab/ca.crt pip download --retries 0 --timeout 20 --no-deps -d /tmp/wheels six==1.16.0
"""


def test_pip_in_a_build_uses_the_host_ca_bundle(tmp_path, client, settings, images):
    if settings.ca_bundle is None:
        pytest.fail("this machine has no CA bundle; set LADDERLAB_CA_BUNDLE")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    base = next(ref for ref, _ in images if ref.name == BASE)
    tags = []
    try:
        for s in (settings, dataclasses.replace(settings, ca_bundle=None)):
            ca = s.ca_bundle.read_bytes() if s.ca_bundle else b""
            ref = ImageRef("ca-test", tmp_path, f"ladderlab/ca-test:{content_hash(tmp_path, ca, base.tag)[:16]}",
                           base.tag)
            tags.append(ref.tag)
            if s is settings:
                build_one(client, s, ref, lambda _m: None)
                assert client.images.get(ref.tag)
            else:
                before = {c["Id"] for c in client.api.containers(all=True)}
                with pytest.raises(ImageError, match="six"):
                    build_one(client, s, ref, lambda _m: None)
                assert {c["Id"] for c in client.api.containers(all=True)} == before, \
                    "a failed build must not leave its step's container behind"
        assert tags[0] != tags[1], "the CA bundle is part of the image's content hash"
    finally:
        for tag in {*tags, "ladderlab/ca-test:latest"}:
            with contextlib.suppress(docker.errors.ImageNotFound):
                client.images.remove(tag, force=True)
