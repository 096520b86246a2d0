"""The scenarios: each pairs one wirekit call with its hand-written baselines.

A contender is a zero-argument callable that processes a whole workload and
returns its output, so :meth:`Case.verify` can check, before anything is
timed, that wirekit and every baseline produce the same frames or values.
Framings and pipelines are built once (they are shareable descriptions);
each call creates fresh per-connection decoder state, as a new connection
would.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from benchmarks import baselines, workloads
from framework import Delimited, LengthPrefix, MsgpackStream, Pipeline

__all__ = ["Baseline", "Case", "build_cases"]


def _plain(value: Any) -> Any:
    """``value`` with memoryview frames turned into bytes, for comparison."""
    if type(value) is list:
        return [bytes(item) if type(item) is memoryview else item for item in value]
    return value


def same_output(wirekit_output: Any, baseline_output: Any) -> bool:
    """Whether both sides produced the same frames, values or bytes."""
    return bool(_plain(wirekit_output) == _plain(baseline_output))


@dataclass(frozen=True)
class Baseline:
    """A hand-written contender and how to check it agrees with wirekit."""

    label: str
    run: Callable[[], Any]
    agrees: Callable[[Any, Any], bool] = same_output


@dataclass(frozen=True)
class Case:
    """One scenario: a wirekit call, its baselines, and the work done per call."""

    key: str
    title: str
    call: str  # the wirekit code being timed, for the report
    items: int  # frames (or values, or messages) per call
    nbytes: int  # wire bytes per call
    wirekit: Callable[[], Any]
    baselines: tuple[Baseline, ...]
    goal: float | None = None  # the largest acceptable wirekit/baseline ratio

    def verify(self) -> None:
        """Raise ``AssertionError`` unless every contender does the same work."""
        output = self.wirekit()
        if type(output) is list and len(output) != self.items:
            raise AssertionError(f"{self.key}: wirekit returned {len(output)} of {self.items}")
        for baseline in self.baselines:
            if not baseline.agrees(output, baseline.run()):
                raise AssertionError(f"{self.key}: {baseline.label!r} disagrees with wirekit")


def _fed_in(pieces: list[bytes], make_feed: Callable[[], Callable[[bytes], list]]) -> Callable:
    """A contender that feeds ``pieces`` one at a time to a fresh feed function."""

    def run() -> list:
        feed = make_feed()
        out: list = []
        for piece in pieces:
            out += feed(piece)
        return out

    return run


def _length_prefix_cases() -> Iterable[Case]:
    buf, count = workloads.length_prefixed()
    pieces = workloads.chunks(buf)
    framing = LengthPrefix()
    yield Case(
        key="length-prefix",
        title="length-prefix: 1 MiB, one feed",
        call="LengthPrefix().decoder().feed(buf)",
        items=count,
        nbytes=len(buf),
        wirekit=lambda: framing.decoder().feed(buf),
        baselines=(
            Baseline("unpack_from + bytes slices", lambda: baselines.split_length_prefixed(buf)[0]),
            Baseline(
                "unpack_from + memoryview slices",
                lambda: baselines.split_length_prefixed_view(buf)[0],
            ),
        ),
        goal=1.3,
    )
    yield Case(
        key="length-prefix-chunked",
        title="length-prefix: 1 MiB in 64 KiB chunks",
        call="decoder.feed(chunk) for each chunk",
        items=count,
        nbytes=len(buf),
        wirekit=_fed_in(pieces, lambda: framing.decoder().feed),
        baselines=(
            Baseline(
                "unpack_from + bytes slices",
                _fed_in(
                    pieces, lambda: baselines.Incremental(baselines.split_length_prefixed).feed
                ),
            ),
            Baseline(
                "unpack_from + memoryview slices",
                _fed_in(
                    pieces,
                    lambda: baselines.Incremental(baselines.split_length_prefixed_view).feed,
                ),
            ),
        ),
        goal=1.3,
    )


def _newline_cases() -> Iterable[Case]:
    buf, count = workloads.text_lines()
    pieces = workloads.chunks(buf)
    framing = Delimited()
    text = Pipeline(framing="newline", codecs="utf-8")
    yield Case(
        key="newline",
        title="newline: 1 MiB, one feed",
        call="Delimited().decoder().feed(buf)",
        items=count,
        nbytes=len(buf),
        wirekit=lambda: framing.decoder().feed(buf),
        baselines=(
            Baseline("bytes.split", lambda: baselines.split_lines(buf)[0]),
            Baseline("bytes.find loop", lambda: baselines.find_lines(buf)[0]),
        ),
    )
    yield Case(
        key="newline-chunked",
        title="newline: 1 MiB in 64 KiB chunks",
        call="decoder.feed(chunk) for each chunk",
        items=count,
        nbytes=len(buf),
        wirekit=_fed_in(pieces, lambda: framing.decoder().feed),
        baselines=(
            Baseline(
                "bytes.split",
                _fed_in(pieces, lambda: baselines.Incremental(baselines.split_lines).feed),
            ),
        ),
    )
    yield Case(
        key="newline-utf8",
        title="newline + utf-8 pipeline: 1 MiB",
        call='Pipeline(framing="newline", codecs="utf-8").decoder().feed(buf)',
        items=count,
        nbytes=len(buf),
        wirekit=lambda: text.decoder().feed(buf),
        baselines=(
            Baseline("bytes.split + decode", lambda: baselines.decode_lines(buf)),
            Baseline("bytes.find loop + decode", lambda: baselines.find_decode_lines(buf)),
        ),
    )


def _decodes_to(frames: list[bytes], values: list) -> bool:
    return [msgpack.unpackb(frame) for frame in frames] == values


def _msgpack_cases() -> Iterable[Case]:
    buf, count = workloads.msgpack_values()
    framing = MsgpackStream()
    values = Pipeline(framing="msgpack-stream", codecs="msgpack")
    yield Case(
        key="msgpack-stream",
        title="msgpack-stream framer: 1 MiB",
        call="MsgpackStream().decoder().feed(buf)",
        items=count,
        nbytes=len(buf),
        wirekit=lambda: framing.decoder().feed(buf),
        baselines=(
            Baseline(
                "Unpacker feed + iterate (values)",
                lambda: baselines.unpacker_values(buf),
                agrees=_decodes_to,
            ),
            Baseline("Unpacker skip + tell (raw frames)", lambda: baselines.unpacker_frames(buf)),
        ),
    )
    yield Case(
        key="msgpack-stream-values",
        title="msgpack-stream + msgpack pipeline: 1 MiB",
        call='Pipeline(framing="msgpack-stream", codecs="msgpack").decoder().feed(buf)',
        items=count,
        nbytes=len(buf),
        wirekit=lambda: values.decoder().feed(buf),
        baselines=(Baseline("Unpacker feed + iterate", lambda: baselines.unpacker_values(buf)),),
    )


def _position_cases() -> Iterable[Case]:
    items = workloads.positions()
    pipeline = Pipeline(framing="length-prefix", codecs="msgpack", messages=[workloads.Position])
    buf = pipeline.encode_many(items)
    yield Case(
        key="position-decode",
        title="position messages: decode",
        call="Pipeline(length-prefix, msgpack, [Position]).decoder().feed(buf)",
        items=len(items),
        nbytes=len(buf),
        wirekit=lambda: pipeline.decoder().feed(buf),
        baselines=(
            Baseline(
                "split + unpackb + Position(**fields)", lambda: baselines.decode_positions(buf)
            ),
        ),
        goal=2.0,
    )
    yield Case(
        key="position-encode",
        title="position messages: encode",
        call="pipeline.encode_many(positions)",
        items=len(items),
        nbytes=len(buf),
        wirekit=lambda: pipeline.encode_many(items),
        baselines=(
            Baseline("packb(dict) + struct header", lambda: baselines.encode_positions(items)),
        ),
    )


def build_cases() -> list[Case]:
    """Every scenario, in report order."""
    return [
        *_length_prefix_cases(),
        *_newline_cases(),
        *_msgpack_cases(),
        *_position_cases(),
    ]
