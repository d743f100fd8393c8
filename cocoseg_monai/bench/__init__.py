"""Benchmarks that print figures (speed and memory are measured here, never asserted in tests)."""
