"""The local API (``python -m api``): JSON over HTTP for signals and scripts, on loopback by default.

It reads SQLite and writes command rows with the pages' own db functions; the background service stays the only
broker caller. Layering: api imports db and config only (tests/test_imports.py).
"""
