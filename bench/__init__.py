"""Benchmarks: each goal has a script here (run as ``python -m bench.NAME`` from the checkout)."""
