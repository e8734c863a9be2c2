"""The explorer: ``convolab serve`` -- a local web app over runs, zoo and spec models (FastAPI + a static front end).

``create_app(folders)`` (:mod:`convolab.serve.app`) builds the app; :mod:`convolab.serve.sources` finds runs and
resolves model references, :mod:`convolab.serve.limits` keeps bad or heavy input out, :mod:`convolab.serve.streams`
follows a run's logs, :mod:`convolab.serve.inspect` and :mod:`convolab.serve.graph` compute what the pages show.
"""

from __future__ import annotations

__all__ = ["create_app"]


def __getattr__(name: str):
    if name == "create_app":  # imported on use: FastAPI loads only when a server is made
        from convolab.serve.app import create_app

        return create_app
    raise AttributeError(f"module 'convolab.serve' has no attribute {name!r}")
