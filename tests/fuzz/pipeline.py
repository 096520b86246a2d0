"""Fuzz target for a whole pipeline: framing, a codec and typed messages.

Four stacks (length prefix or msgpack stream with msgpack, length prefix or
newline with JSON) decode the payload in the input's chunking. Checks: only
wirekit errors, and the right ones (a ``DecodeError`` costs one frame and the
stream goes on; a ``FramingError`` ends it unless recoverable); every value
is a registered message; buffers stay bounded; chunking changes nothing; the
decoded messages re-encode into a stream that decodes to the same messages.
"""

from __future__ import annotations

import contextlib
from typing import Any

from framework.core.errors import EncodeError
from framework.core.framing import Delimited, LengthPrefix, MsgpackStream
from framework.core.pipeline import Pipeline

from . import _model
from ._support import Input, Target, Trace, drive, seed, shows_json_bug, split

__all__ = ["PIPELINES", "TARGETS", "json_bug_in", "reference_trace"]

REGISTRY = _model.registry()
LIMIT = 300
PIPELINES = (
    Pipeline(
        framing=LengthPrefix(prefix_size=2, max_frame_size=LIMIT),
        codecs="msgpack",
        messages=REGISTRY,
    ),
    Pipeline(framing=MsgpackStream(max_frame_size=LIMIT), codecs="msgpack", messages=REGISTRY),
    Pipeline(framing=LengthPrefix(max_frame_size=LIMIT), codecs="json", messages=REGISTRY),
    Pipeline(
        framing=Delimited(max_frame_size=LIMIT, on_oversize="skip"),
        codecs="json",
        messages=REGISTRY,
    ),
)


def _is_message(value: Any) -> None:
    assert type(value) in _model.CLASSES, f"decoded a {type(value).__name__}, not a message"


def json_bug_in(pipeline: Pipeline, values: list[Any]) -> bool:
    """Whether messages decoded through ``pipeline`` show an open JSON bug (see KNOWN_BUGS)."""
    via_json = any(codec.name == "json" for codec in pipeline.codecs)
    return via_json and any(shows_json_bug(REGISTRY.encode(value)) for value in values)


def reference_trace(pipeline: Pipeline, chunks: list[Any]) -> Any:
    """What the sans-I/O decoder makes of ``chunks``, with every check applied."""
    return drive(
        pipeline.decoder(),
        chunks,
        limit=pipeline.framing.max_frame_size,
        decode_errors=True,
        check=_is_message,
    )


def run_pipeline(data: bytes) -> int:
    """Decode a stream of typed messages through each stack."""
    inp = Input(data)
    pipeline = inp.pick(PIPELINES)
    sizes, kind = inp.chunking()
    payload = inp.rest()
    chunked = reference_trace(pipeline, split(payload, sizes, kind))
    if json_bug_in(pipeline, chunked.values):
        return 0
    whole = reference_trace(pipeline, [payload])
    assert chunked.same_as(whole, key=pipeline.encode_frame), (
        f"chunks {sizes} give {chunked}, one chunk gives {whole}"
    )
    wire = pipeline.encode_many(chunked.values)
    again = reference_trace(pipeline, [wire])
    assert not again.errors, f"re-encoded messages fail: {again}"
    assert not again.incomplete, f"re-encoded messages end mid-frame: {again}"
    assert again.same_as(Trace(values=chunked.values), key=pipeline.encode_frame), (
        "re-encoded messages decode differently"
    )
    return len(chunked.values)


def seeds_pipeline() -> list[bytes]:
    """The sample messages through each stack, whole and in small chunks."""
    out = []
    for index, pipeline in enumerate(PIPELINES):
        frames = []
        for sample in _model.samples():
            with contextlib.suppress(EncodeError):  # JSON cannot carry bytes
                frames.append(pipeline.encode(sample))
        wire = b"".join(frames)
        out.append(seed(wire, [index, 0, 0]))
        out.append(seed(wire, [index, 3, 1, 9, 0, 2]))
    return out


TARGETS = [
    Target(
        "pipeline",
        "Pipeline: length-prefix/msgpack-stream + msgpack, length-prefix/newline + JSON, "
        "typed messages",
        run_pipeline,
        seeds_pipeline,
        max_len=1024,  # a few frames of up to LIMIT bytes: longer inputs only cost time
    ),
]
