"""How ladderlab reaches a host: ``docker`` (exec through the API) or ``ssh`` (paramiko)."""

from ladderlab.environments.transports.base import CommandResult, Transport, quote_command
from ladderlab.environments.transports.docker import DockerTransport
from ladderlab.environments.transports.ssh import SSHTransport, generate_key

__all__ = ["CommandResult", "DockerTransport", "SSHTransport", "Transport", "generate_key", "quote_command"]
