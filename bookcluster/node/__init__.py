"""The stateless app node: the aiohttp process serving the HTTP API, seat maps and pages."""
