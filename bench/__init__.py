"""Benchmarks with their targets: `python -m bench [name ...]` (see docs/benchmarks.md)."""
