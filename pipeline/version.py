"""litminer's version: the installed package's, so ``pyproject.toml`` is its one source.

``litminer --version``, the OpenAPI document and the User-Agent of requests to literature APIs all read it.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def _installed() -> str:
    try:
        return version("litminer")
    except PackageNotFoundError:  # a source tree that was never installed (uv sync installs it)
        return "0+unknown"


#: the version, e.g. ``0.1.0``
VERSION = _installed()
