"""`python -m bookcluster.devsim.wanproxy --config links.json --control-port N`."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bookcluster.devsim.wanproxy.links import (
    LINK_FIELDS,
    REQUIRED_FIELDS,
    ConfigError,
    InvalidInput,
    Link,
)
from bookcluster.devsim.wanproxy.proxy import ProxySet

log = logging.getLogger("bookcluster.devsim.wanproxy")


def load_links(path: Path) -> list[Link]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not JSON: {exc.msg}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("links"), list):
        raise ConfigError(f"{path}: links: must be a list of links")
    links = [_parse_link(f"{path}: links[{i}]", item) for i, item in enumerate(raw["links"])]
    names = [link.name for link in links]
    for i, name in enumerate(names):
        if name in names[:i]:
            raise ConfigError(f"{path}: links[{i}].name: {name!r} is not unique")
    return links


def _parse_link(where: str, item: object) -> Link:
    if not isinstance(item, dict):
        raise ConfigError(f"{where}: must be an object")
    for key in item:
        if key not in LINK_FIELDS:
            raise ConfigError(f"{where}.{key}: unknown key (known: {', '.join(LINK_FIELDS)})")
    for key in REQUIRED_FIELDS:
        if key not in item:
            raise ConfigError(f"{where}.{key}: missing")
    try:
        return Link(**{"listen_host": "127.0.0.1", **item})
    except InvalidInput as exc:
        raise ConfigError(f"{where}.{exc.field}: {exc.reason}") from None


async def serve(links: Sequence[Link], control_host: str, control_port: int) -> None:
    """Run the proxies and the control API until SIGTERM or SIGINT."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with ProxySet(links, control_host=control_host,
                            control_port=control_port) as proxies:
            for link in proxies.describe():
                log.info("link %s: %s -> %s, delay %d ms, mode %s", link["name"], link["listen"],
                         link["target"], link["delay_ms"], link["mode"])
            log.info("control API on %s", proxies.control_url)
            await stop.wait()
            totals = [(p.connections_total, p.bytes_forwarded) for p in proxies.links.values()]
        log.info("stopped: %d links, %d connections, %d bytes forwarded", len(totals),
                 sum(t[0] for t in totals), sum(t[1] for t in totals))
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bookcluster.devsim.wanproxy",
                                     description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True, help="the links JSON file")
    parser.add_argument("--control-port", type=int, required=True,
                        help="port of the control API (0: any free port)")
    parser.add_argument("--control-host", default="127.0.0.1")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        links = load_links(args.config)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(serve(links, args.control_host, args.control_port))
    except OSError as exc:  # a port already taken, most likely
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
