"""Every fuzz target by name. Importing this module imports ``framework``."""

from __future__ import annotations

from . import codecs, framers, messages, pipeline, security, server, udp_server
from ._support import Target

__all__ = ["TARGETS"]

TARGETS: dict[str, Target] = {
    target.name: target
    for target in (
        *framers.TARGETS,
        *codecs.TARGETS,
        *messages.TARGETS,
        *pipeline.TARGETS,
        *security.TARGETS,
        *server.TARGETS,
        *udp_server.TARGETS,
    )
}
