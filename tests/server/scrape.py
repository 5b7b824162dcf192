"""Scraping a server's ``/metrics`` as Prometheus does, read with prometheus-client's parser."""

from __future__ import annotations

import asyncio
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from clubroom_server.app import Clubroom

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def get(url: str) -> str:
    """The body of a plain HTTP GET (blocking: call it through ``asyncio.to_thread``)."""
    with urllib.request.urlopen(url, timeout=5) as response:
        return str(response.read().decode())


async def scrape_app(app: Clubroom | None) -> Samples:
    """Every sample the app's metrics endpoint serves, keyed by name and labels."""
    assert app is not None and app.metrics is not None, "metrics are not on"
    text = await asyncio.to_thread(get, f"http://{app.metrics.address}/metrics")
    return parse(text)


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 for a series that is not there (as a fresh counter would be)."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}
