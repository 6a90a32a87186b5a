"""The stateless app node: HTTP API, hold/confirm services, seat maps, sweeper."""
