"""The web pages: the booking page at `/`, the operator page at `/ops`, the door
scanner at `/scan`, and their static files (`bookcluster/node/web/`: plain HTML, CSS
and JavaScript modules, no build step; one vendored library, jsQR, with its licence).
The pages call the node that served them, except the booking page's writes,
which go straight to a node of the show's home region (`cors.py`), back to the
serving node (which forwards them) if that node does not answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bookcluster.errors import NotFound
from bookcluster.node import access
from bookcluster.node.cors import node_origins
from bookcluster.node.typedefs import connections_key

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
CONTENT_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css",
                 ".svg": "image/svg+xml", ".txt": "text/plain"}
# Only this origin's scripts and styles; connections to this origin (its own WebSocket
# included) and to the cluster's other nodes, where the booking page sends writes home
# (`cors.py`); tickets are shown from blob: URLs. No inline script, so injected markup
# cannot run.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
       "connect-src 'self'{nodes}; frame-ancestors 'none'; base-uri 'none'; form-action 'none'")
HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}


def csp(origins: frozenset[str]) -> str:
    return CSP.format(nodes="".join(f" {o}" for o in sorted(origins)))


@dataclass(frozen=True)
class WebFile:
    body: bytes
    content_type: str


def load_files(folder: Path = WEB_DIR) -> dict[str, WebFile]:
    """Every servable file of `folder` by name, read once at start-up (a request never
    names a path: only these names exist, so nothing outside the folder is reachable)."""
    return {path.name: WebFile(path.read_bytes(), CONTENT_TYPES[path.suffix])
            for path in sorted(folder.iterdir()) if path.suffix in CONTENT_TYPES}


files_key: web.AppKey[dict[str, WebFile]] = web.AppKey("web_files")


def _serve(request: web.Request, name: str) -> web.Response:
    found = request.app[files_key].get(name)
    if found is None:
        raise NotFound(f"no file {name!r}", id=name)
    policy = csp(node_origins(request.app[connections_key].topology))
    return web.Response(body=found.body, content_type=found.content_type,
                        charset="utf-8", headers={**HEADERS, "Content-Security-Policy": policy})


@access.public
async def booking_page(request: web.Request) -> web.Response:
    return _serve(request, "index.html")


@access.public
async def operator_page(request: web.Request) -> web.Response:
    """The page is public; the data it shows needs an operator token (`/ops/overview`)."""
    return _serve(request, "ops.html")


@access.public
async def scanner_page(request: web.Request) -> web.Response:
    """The page is public; its scans need a scanner token (`/checkin/scan`)."""
    return _serve(request, "scan.html")


@access.public
async def static_file(request: web.Request) -> web.Response:
    return _serve(request, request.match_info["name"])
