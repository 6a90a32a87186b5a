"""Entry point of an app node: `python -m region_node --region R --port P`."""

from __future__ import annotations

import logging
import sys

import uvloop

from region_node.app import create_app
from region_node.server import serve
from region_node.settings import from_args
from router.errors import RouterError


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = from_args(argv)
        app = create_app(settings)
    except RouterError as exc:  # a bad topology or a missing secret
        sys.exit(f"error: {exc}")
    try:
        uvloop.run(serve(app, settings))
    except RouterError as exc:  # at start-up: a map the stores' ownership contradicts
        sys.exit(f"error: {exc}")
