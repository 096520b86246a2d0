"""Reading a metrics endpoint the way Prometheus does: HTTP, then the text parser.

``endpoint`` is a fixture: a test module imports it (and names it in its
``__all__``) to use it.
"""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from framework.runtime.metrics import enable
from framework.runtime.metrics_http import serve_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def fetch(url: str) -> tuple[int, str]:
    """GET ``url``: the status and the body (an error status is returned, not raised)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode("utf-8")
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode("utf-8")


def scrape(base: str) -> Samples:
    """Every sample of ``base``/metrics, keyed by name and label set."""
    status, text = fetch(f"{base}/metrics")
    assert status == 200, text
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, frozenset(sample.labels.items())] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples whose labels include ``labels``."""
    wanted = set(labels.items())
    return sum(
        value for (found, keys), value in samples.items() if found == name and wanted <= keys
    )


@pytest.fixture
def endpoint() -> Iterator[str]:
    """A metrics endpoint on a free loopback port; handler timing off again afterwards."""
    with serve_metrics("127.0.0.1:0") as served:
        yield served.url
    enable(False)


async def scraped(url: str) -> Samples:
    """``scrape`` from a coroutine, without blocking the loop that serves."""
    return await asyncio.to_thread(scrape, url)


async def health(url: str) -> tuple[int, str]:
    """The status and body of ``url``/healthz, from a coroutine."""
    return await asyncio.to_thread(fetch, f"{url}/healthz")
