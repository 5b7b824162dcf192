"""Clubroom's benchmark: the real server against a bare ``websockets`` ceiling.

Run ``python -m bench`` (full, about 10 minutes) or ``python -m bench --quick``.
See ``docs/readme-performance.md`` for what each scenario measures.
"""
