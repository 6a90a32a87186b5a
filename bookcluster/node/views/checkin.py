"""At the door: the public keys of signed tickets, and check-in scans
(`bookcluster/booking/checkin.py`).

A scan is a home write (forwarded to its show's home region, within the write rate
limits of the gate's token); only a `scanner` token for the show's theatre may make it.
"""

from __future__ import annotations

from aiohttp import web

from bookcluster.booking import ids
from bookcluster.booking.checkin import parse_batch, parse_scan
from bookcluster.errors import InvalidInput
from bookcluster.node import access
from bookcluster.node.answers import answer
from bookcluster.node.auth import SCANNER, Identity
from bookcluster.node.body import json_body
from bookcluster.node.typedefs import bookings_key, catalog_key


@access.public
async def ticket_keys(request: web.Request) -> web.Response:
    """Every public key a signed ticket may name (scanners verify offline with them)."""
    return answer(request.app[bookings_key].tickets.keys.published())


async def _scan_region(request: web.Request) -> str:
    scan = parse_scan(await json_body(request))
    return (await request.app[bookings_key].checkin.show_of(scan.payload)).region


async def _batch_region(request: web.Request) -> str:
    batch = parse_batch(await json_body(request))
    return (await request.app[bookings_key].checkin.show_of(batch.scans[0].payload)).region


@access.home_write(_scan_region)
async def scan(request: web.Request, caller: Identity) -> web.Response:
    caller.require(SCANNER)
    return answer(await request.app[bookings_key].checkin.scan(
        parse_scan(await json_body(request)), caller.user, caller.theatres))


@access.home_write(_batch_region)
async def batch(request: web.Request, caller: Identity) -> web.Response:
    caller.require(SCANNER)
    body = parse_batch(await json_body(request))
    if not body.scans:
        raise InvalidInput("no scans", field="scans")
    return answer(await request.app[bookings_key].checkin.batch(
        body, caller.user, caller.theatres, await _batch_region(request)))


MAX_SHOWS = 50


@access.operator
async def head_counts(request: web.Request, caller: Identity) -> web.Response:
    """Per show: seats sold, admitted and inside now, each read at its home region."""
    catalog = request.app[catalog_key]
    shows = []
    for theatre in request.query.getall("theatre", []):
        catalog.theatre(theatre)  # NotFound for an unknown theatre
        shows.extend(catalog.shows_of(theatre))
    for show in request.query.getall("show", []):
        shows.append(await catalog.show(ids.show_id(show)))
    if not shows:
        raise InvalidInput("name shows (?show=ID) or a theatre (?theatre=ID)", field="show")
    if len(shows) > MAX_SHOWS:
        raise InvalidInput(f"at most {MAX_SHOWS} shows at once", field="show")
    counts = await request.app[bookings_key].checkin.counts(shows)
    return answer({"shows": sorted(counts, key=lambda c: c["show_id"])})
