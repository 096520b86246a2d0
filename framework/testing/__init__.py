"""wirekit's testing kit: Hypothesis strategies and laws for your own parts.

Install it with ``pip install wirekit[testing]`` (it needs Hypothesis). The
same laws test every built-in framing and codec, so a custom one that passes
them behaves like a built-in.
"""

from __future__ import annotations

from framework.testing.laws import (
    BUFFER_SLACK,
    check_codec_roundtrip,
    check_decode_total,
    check_framing_roundtrip,
    check_message_roundtrip,
    check_rejects_oversize,
)
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
    "check_codec_roundtrip",
    "check_decode_total",
    "check_framing_roundtrip",
    "check_message_roundtrip",
    "check_rejects_oversize",
    "chunkings",
    "codec_values",
    "frame_payloads",
    "garbage",
    "json_values",
    "message_instances",
    "msgpack_values",
    "register_frames",
    "register_values",
    "utf8_text",
]
