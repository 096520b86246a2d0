"""``python -m benchmarks hot-path`` runs, and its two sides do the same work.

No timing is asserted: the run itself checks that wirekit and the
hand-written echo wrote the same bytes for the same reads, and raises if not.
"""

from __future__ import annotations

import asyncio

import pytest

from benchmarks import hot_path


def test_every_scenario_runs_and_prints_a_ratio(capsys: pytest.CaptureFixture[str]) -> None:
    assert hot_path.main(["--samples", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    for scenario in hot_path._scenarios():
        [row] = [line for line in lines if line.startswith(scenario.title)]
        assert row.endswith("x")


def test_the_harness_notices_when_the_two_sides_write_different_bytes() -> None:
    class Silent(hot_path.HandWritten):
        def data_received(self, data: bytes) -> None:
            return None

    [scenario] = [s for s in hot_path._scenarios() if s.key == "raw-1"]
    broken = hot_path.Scenario(
        scenario.key, scenario.title, scenario.reads[:10], 10, scenario.wirekit, Silent
    )
    with pytest.raises(AssertionError, match="wrote"):
        asyncio.run(hot_path._measure(broken, 1))
