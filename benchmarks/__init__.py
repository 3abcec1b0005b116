"""Benchmarks of the SDK; run ``python -m benchmarks`` (see ``benchmarks/run.py``)."""
