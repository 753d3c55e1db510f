"""Benchmarks. Each module ``bench/NAME.py`` exposes ``run() -> dict``; see ``__main__``."""
