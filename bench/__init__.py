"""Benchmarks, run with `python -m bench` from the repository root; never part of `make test`.

Each module here with a `run() -> bool` is one benchmark; it prints its figures and returns whether
it met its target."""
