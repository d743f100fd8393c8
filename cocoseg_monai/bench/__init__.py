"""Benchmarks that print figures (speed and memory are measured here, never asserted in tests)."""

from __future__ import annotations

__all__ = ["write_result"]


def write_result(path: str | None, result: dict) -> None:
    """Write a benchmark's figures to the JSON file ``path`` (atomically) when one is given."""
    if path:
        from ..atomic import atomic_write_json

        atomic_write_json(path, result)
        print(f"\nwritten: {path}")
