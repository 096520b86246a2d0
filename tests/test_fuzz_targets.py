"""The fuzz targets in tests/fuzz run over a small fixed corpus, so they cannot rot.

Coverage-guided fuzzing itself runs outside pytest (``make fuzz-short`` in CI,
``make fuzz`` for a long run): here each target's one-input function checks
its generated seeds and some deterministic garbage, which must pass, and the
runner's reading of libFuzzer's output is checked on a real transcript. Each
bug fuzzing found has a regression test at the end (a strict xfail while it
is open and listed in ``KNOWN_BUGS``).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("atheris", reason="the fuzz targets read inputs with atheris")

from fuzz._support import KNOWN_BUGS, Input, seed, split
from fuzz.child import _keeping
from fuzz.framers import MSGPACK_LIMITS
from fuzz.runner import parse
from fuzz.targets import TARGETS

from framework.core.codecs import JsonCodec
from framework.core.errors import DecodeError
from framework.core.framing import Datagram, Delimited, LengthPrefix, MsgpackStream
from framework.core.pipeline import Pipeline
from framework.runtime.app import App
from framework.runtime.transports import memory


@pytest.fixture(scope="module", autouse=True)
def _release_targets() -> Iterator[None]:
    yield
    for target in TARGETS.values():
        if target.close is not None:
            target.close()


def garbage(count: int) -> list[bytes]:
    """The same pseudo-random inputs on every run, from empty to a few hundred bytes."""
    rng = random.Random(20261125)
    inputs = [b"", b"\x00", b"\xff" * 64, bytes(range(256))]
    inputs += [rng.randbytes(rng.randrange(1, 400)) for _ in range(count)]
    return inputs


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_accepts_its_seeds(name: str) -> None:
    target = TARGETS[name]
    seeds = target.seeds()
    decoded = [target.run(data) for data in seeds]
    assert len(seeds) >= 5
    # The seeds are valid frames of each kind: most of them must decode.
    assert sum(count > 0 for count in decoded) >= len(seeds) // 3


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_survives_garbage(name: str) -> None:
    target = TARGETS[name]
    for data in garbage(40):
        target.run(data)


@pytest.mark.parametrize("name", list(TARGETS))
def test_target_survives_mutated_seeds(name: str) -> None:
    # Valid frames with a byte flipped reach the error paths that garbage rarely does.
    target = TARGETS[name]
    rng = random.Random(name)
    for data in target.seeds():
        mutated = bytearray(data)
        if mutated:
            mutated[rng.randrange(len(mutated))] ^= 1 << rng.randrange(8)
        target.run(bytes(mutated))


def test_seed_layout_matches_the_input_reader() -> None:
    inp = Input(seed(b"payload", [2, 1, 200]))
    assert inp.pick("abc") == "c"
    assert inp.pick((True, False)) is False
    assert inp.byte() == 200
    assert inp.rest() == b"payload"


def test_split_cycles_sizes_and_keeps_every_byte() -> None:
    assert split(b"abcdefg", [2, 3]) == [b"ab", b"cde", b"fg"]
    assert split(b"abc", [0, 1]) == [b"", b"a", b"", b"b", b"", b"c"]
    assert split(b"abc", []) == [b"abc"]
    assert split(b"abc", [0]) == [b"", b"abc"]


def test_chunking_may_change_which_fault_ends_a_stream() -> None:
    # A 6-element array with the unused byte 0xc1 inside, limit 5: one chunk
    # meets the bad byte first (InvalidFrame), single bytes the limit first
    # (FrameTooLarge). Both end the stream with the same frames: accepted.
    data = seed(b"\x96\x01\x02\x03\x04\x05\xc1\x00", [MSGPACK_LIMITS.index(5), 1, 1, 0])
    assert TARGETS["msgpack-stream"].run(data) == 0


def test_child_keeps_a_failing_input_itself(tmp_path: Path) -> None:
    class Failing:
        name = "failing"

        def one_input(self, data: bytes) -> None:
            raise ValueError(data)

    run = _keeping(Failing(), str(tmp_path))
    with pytest.raises(ValueError, match="abc"):
        run(b"abc")
    [kept] = tmp_path.iterdir()
    assert kept.name.startswith("failing-failing-")
    assert kept.read_bytes() == b"abc"


# Lines of a real run: a clean one, and one that found a crash (shortened).
CLEAN_RUN = """\
INFO: Seed: 1234
#2\tINITED cov: 36 ft: 36 corp: 1/1b exec/s: 0 rss: 63Mb
#4096\tpulse  cov: 88 ft: 301 corp: 50/1Kb lim: 43 exec/s: 2048 rss: 63Mb
#21062\tDONE   cov: 91 ft: 338 corp: 55/1313b lim: 163 exec/s: 3510 rss: 63Mb
Done 21062 runs in 6 second(s)
stat::number_of_executed_units: 21062
stat::average_exec_per_sec:     3510
stat::new_units_added:          53
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              63
"""
CRASH_RUN = """\
#2202\tREDUCE cov: 252 ft: 620 corp: 58/1014b lim: 42 exec/s: 0 rss: 63Mb L: 13/41 MS: 2
 === Uncaught Python exception: ===
AssertionError: a packed datagram decodes unlike the stream it holds
Traceback (most recent call last):
  File "tests/fuzz/framers.py", line 220, in run_datagram
AssertionError: a packed datagram decodes unlike the stream it holds

==10655== ERROR: libFuzzer: fuzz target exited
SUMMARY: libFuzzer: fuzz target exited
artifact_prefix='x-'; Test unit written to tests/fuzz/crashes/datagram-crash-b14e
Base64: AANlAHfX19eL19fX1290A25vAAAABXRocmVlAtc=
stat::number_of_executed_units: 2222
"""


def test_runner_reads_executions_and_coverage() -> None:
    result = parse("length-prefix", CLEAN_RUN, 0, 7.5)
    assert (result.executions, result.exec_per_second) == (21062, 3510)
    assert (result.coverage, result.features, result.corpus) == (91, 338, 55)
    assert result.peak_rss_mb == 63
    assert not result.crashed


def test_runner_reports_a_crash_with_its_reproducer() -> None:
    result = parse("datagram", CRASH_RUN, 1, 3.0)
    assert result.crashed
    assert result.artifacts == ["tests/fuzz/crashes/datagram-crash-b14e"]
    assert result.report.splitlines()[0].strip() == "=== Uncaught Python exception: ==="
    assert "decodes unlike the stream" in result.report
    assert "SUMMARY: libFuzzer: fuzz target exited" in result.report
    assert result.report.endswith("Test unit written to tests/fuzz/crashes/datagram-crash-b14e")
    assert result.executions == 2222
    assert result.exec_per_second == 740  # no final rate: executions over wall time


# -- bugs found by fuzzing: each test guards its fix --------------------------------

#: Every bug fuzzing found, by its KNOWN_BUGS id (listed there while open), and its test.
REGRESSIONS = {
    "json-nonfinite": "test_json_refuses_numbers_that_overflow_to_infinity",
    "json-lone-surrogate": "test_json_values_it_decodes_can_be_encoded",
    "msgpack-stream-encode": "test_msgpack_stream_encodes_every_frame_it_decodes",
    "delimited-straddling-delimiter": "test_delimited_long_delimiter_split_across_the_limit",
    "udp-packed-oversize-frame": "test_udp_packed_datagram_keeps_frames_before_an_oversize_one",
}


def test_every_known_bug_has_a_regression_test() -> None:
    assert set(KNOWN_BUGS) <= set(REGRESSIONS)
    for name in REGRESSIONS.values():
        assert callable(globals()[name])


@pytest.mark.parametrize("text", [b"1e400", b"[-1e999]", b'{"x": 2e308}'])
def test_json_refuses_numbers_that_overflow_to_infinity(text: bytes) -> None:
    with pytest.raises(DecodeError):
        JsonCodec().decode(text)


@pytest.mark.parametrize("text", [b'"\\ud800"', b'["a\\udfff"]', b'{"\\udc00": 1}'])
def test_json_values_it_decodes_can_be_encoded(text: bytes) -> None:
    codec = JsonCodec()
    try:
        value = codec.decode(text)
    except DecodeError:
        return  # refusing the input is a fix too
    assert codec.decode(codec.encode(value)) == value


@pytest.mark.parametrize(
    "wire",
    [
        b"\x81\x90\x00",  # {[]: 0}: an array as a map key (TypeError escapes)
        b"\x81\x80\x00",  # {{}: 0}: a map as a map key (TypeError escapes)
        b"\xd4\xfe\x00",  # fixext 1 of type -2 (InvalidFrame)
    ],
)
def test_msgpack_stream_encodes_every_frame_it_decodes(wire: bytes) -> None:
    framing = MsgpackStream()
    [frame] = framing.decoder().feed(wire)
    assert framing.encode(frame) == wire


@pytest.mark.parametrize(
    ("delimiter", "chunks"),
    [
        (b"\r\n\r\n", [b"xxx\r\n", b"\r\n"]),  # a 3-byte frame, limit 4
        (b"\r\n\r\n", [b"xxx\r\n\r", b"\n"]),
        (b"aba", [b"xxxab", b"a"]),
    ],
)
def test_delimited_long_delimiter_split_across_the_limit(
    delimiter: bytes, chunks: list[bytes]
) -> None:
    decoder = Delimited(delimiter=delimiter, max_frame_size=4).decoder()
    frames = [frame for chunk in chunks for frame in decoder.feed(chunk)]
    assert frames == [b"xxx"]


def test_udp_packed_datagram_keeps_frames_before_an_oversize_one() -> None:
    async def serve_one_datagram() -> list[bytes]:
        framing = LengthPrefix(prefix_size=2, max_frame_size=8)
        app = App(Pipeline(framing=framing, datagram=Datagram(packed=True)))
        received: list[bytes] = []

        @app.on(bytes)
        def keep(frame: bytes, _conn: object) -> None:
            received.append(frame)

        server = await app.start("memory+udp://fuzz-regression-packed")
        transport, _ = memory.open_datagrams("fuzz-regression-packed", asyncio.DatagramProtocol)
        # "ok", then a frame announcing 9 bytes, over max_frame_size=8.
        transport.sendto(b"\x00\x02ok" + b"\x00\x09" + b"x" * 9)
        for _ in range(20):
            await asyncio.sleep(0)
        transport.close()
        await server.close()
        return received

    assert asyncio.run(serve_one_datagram()) == [b"ok"]
