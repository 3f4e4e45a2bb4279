"""Benchmarks: ``uv run python -m bench NAME [--quick]``. They print numbers and assert nothing."""
