"""wirekit's testing kit: Hypothesis strategies and laws for your own parts,
and a misbehaving network to run whole servers and clients on.

Install it with ``pip install wirekit[testing]`` (it needs Hypothesis). The
same laws test every built-in framing and codec, so a custom one that passes
them behaves like a built-in. :func:`inject` adds seeded faults to the
in-memory transports, :func:`run_virtual` runs a test on a virtual clock so
timeouts take no real time, and :class:`ScriptedPeer` is a client a test
drives byte by byte.
"""

from __future__ import annotations

from framework.testing.clock import VirtualClockLoop, VirtualClockPolicy, run_virtual
from framework.testing.faults import (
    DatagramFaults,
    FaultStats,
    Injection,
    StreamFaults,
    inject,
)
from framework.testing.laws import (
    BUFFER_SLACK,
    check_codec_roundtrip,
    check_decode_total,
    check_framing_roundtrip,
    check_message_roundtrip,
    check_rejects_oversize,
)
from framework.testing.peers import ScriptedPeer
from framework.testing.strategies import (
    chunkings,
    codec_values,
    frame_payloads,
    garbage,
    json_values,
    message_instances,
    msgpack_values,
    register_frames,
    register_values,
    utf8_text,
)

__all__ = [
    "BUFFER_SLACK",
    "DatagramFaults",
    "FaultStats",
    "Injection",
    "ScriptedPeer",
    "StreamFaults",
    "VirtualClockLoop",
    "VirtualClockPolicy",
    "check_codec_roundtrip",
    "check_decode_total",
    "check_framing_roundtrip",
    "check_message_roundtrip",
    "check_rejects_oversize",
    "chunkings",
    "codec_values",
    "frame_payloads",
    "garbage",
    "inject",
    "json_values",
    "message_instances",
    "msgpack_values",
    "register_frames",
    "register_values",
    "run_virtual",
    "utf8_text",
]
