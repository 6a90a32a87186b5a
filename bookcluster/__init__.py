"""bookcluster: a region-sharded movie-ticket booking cluster where no seat is ever sold twice.

Sub-packages, lowest first (a module imports only from its own layer or below;
`tests/unit/test_layers.py` checks it): topology, stores and db, catalog, seats,
booking, node, worker, ops, devsim, local, deploy; `cli` is the entry point."""
