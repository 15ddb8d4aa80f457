"""pyproject.toml: every console script names a callable that exists, and every package of ours is installed."""
from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_console_scripts_when_read_then_each_names_an_existing_function():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    scripts = meta["project"]["scripts"]
    assert {"algomirror-service", "algomirror-ui", "algomirror-api", "algomirror-demo"} <= set(scripts)
    for target in scripts.values():
        module, _, func = target.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), target


def test_packages_when_listed_then_every_top_level_package_of_ours_is_installed():
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    ours = {p.parent.name for p in ROOT.glob("*/*.py") if p.parent.name not in ("tests", "bench")}
    assert ours <= set(meta["packages"]) and {"app", "config"} <= set(meta["py-modules"])
