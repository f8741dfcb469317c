"""ModelCache: LRU bounded by count and bytes; concurrent first requests load once."""

from __future__ import annotations

import contextlib
import threading
import time

from app.api.model_cache import ModelCache


def loader(value, size=1, calls=None):
    def load():
        if calls is not None:
            calls.append(value)
        return value, size

    return load


def test_lru_by_count():
    cache = ModelCache(max_models=2, max_bytes=10**9)
    cache.get(("a", 1), loader("a1"))
    cache.get(("b", 1), loader("b1"))
    cache.get(("a", 1), loader("never"))  # a hit makes a1 the most recent
    cache.get(("c", 1), loader("c1"))  # evicts b1
    calls: list[str] = []
    assert cache.get(("a", 1), loader("again", calls=calls)) == "a1"
    assert cache.get(("b", 1), loader("b1-reloaded", calls=calls)) == "b1-reloaded"
    assert calls == ["b1-reloaded"] and len(cache) == 2


def test_lru_by_bytes_keeps_at_least_one():
    cache = ModelCache(max_models=10, max_bytes=100)
    cache.get(("a", 1), loader("a", size=60))
    cache.get(("b", 1), loader("b", size=60))  # over 100 bytes: a goes
    assert len(cache) == 1 and cache.total_bytes == 60
    cache.get(("big", 1), loader("big", size=500))  # larger than the budget, still served
    assert len(cache) == 1 and cache.total_bytes == 500


def test_concurrent_first_requests_load_once():
    cache = ModelCache(max_models=4, max_bytes=10**9)
    calls: list[str] = []

    def slow_load():
        calls.append("load")
        time.sleep(0.05)
        return "model", 1

    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(cache.get(("m", 1), slow_load)))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == ["load"] and results == ["model"] * 8


def test_a_failed_load_is_retried():
    cache = ModelCache(max_models=4, max_bytes=10**9)

    def failing():
        raise RuntimeError("boom")

    with contextlib.suppress(RuntimeError):
        cache.get(("m", 1), failing)
    assert cache.get(("m", 1), loader("ok")) == "ok"
