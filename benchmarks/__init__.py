"""Benchmarks: runnable programs, every figure a ratio against raw APSW
measured in the same run. ``python -m benchmarks [--quick] [--json FILE]``."""
