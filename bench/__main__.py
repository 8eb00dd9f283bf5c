"""Run every bench/bench_*.py module's main(), or only those named: `python -m bench seed`."""

from __future__ import annotations

import importlib
import pkgutil
import sys

import bench


def run(names: list[str]) -> int:
    """Run the named benchmarks (all when none are named); non-zero when one missed its target."""
    available = sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules(bench.__path__)
        if m.name.startswith("bench_")
    )
    unknown = [n for n in names if n not in available]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; available: {', '.join(available)}")
        return 2
    failed = 0
    for name in names or available:
        module = importlib.import_module(f"bench.bench_{name}")
        failed += 0 if module.main() == 0 else 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
