"""Entry point of an app node: `python -m bookcluster.node --region R --port P`."""

from __future__ import annotations

import gc
import logging
import sys

import uvloop

from bookcluster import tracing
from bookcluster.node import requestlog
from bookcluster.node.app import create_app
from bookcluster.node.server import serve
from bookcluster.node.settings import from_args
from bookcluster.topology import environment
from bookcluster.topology.errors import RouterError

# The cyclic collector's youngest generation is collected every 700 net allocations
# by default: about 20 times a second on a node taking 350 holds/s, 3 % of its CPU
# (profiled: 219 collections, 0.13 s of 4.2 s). Nearly all that a request allocates
# dies by reference count anyway; every 10,000 it ran 5 times in the same load.
GC_THRESHOLDS = (10_000, 10, 10)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The access log's lines are JSON alone (`requestlog.py`), on the same stream.
    access = logging.getLogger(requestlog.LOGGER)
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.propagate = False
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        settings = from_args(argv)
        app = create_app(settings)
    except RouterError as exc:  # a bad topology or a missing secret
        sys.exit(f"error: {exc}")
    tracing.configure("bookcluster-node", settings.region, environment.otel_endpoint())
    try:
        uvloop.run(serve(app, settings))
    except RouterError as exc:  # at start-up: a map the stores' ownership contradicts
        sys.exit(f"error: {exc}")
