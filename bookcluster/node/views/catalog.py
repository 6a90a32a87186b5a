"""Catalog and seat-map reads. Any node answers for any theatre, from its own region."""

from __future__ import annotations

from aiohttp import web

from bookcluster.booking import ids
from bookcluster.errors import InvalidInput
from bookcluster.node import access
from bookcluster.node.answers import answer
from bookcluster.node.typedefs import catalog_key, seatmaps_key


@access.public
async def list_theatres(request: web.Request) -> web.Response:
    catalog = request.app[catalog_key]
    city = request.query.get("city")
    region = request.query.get("region")
    theatres = [t.as_json() for t in catalog.theatres.values()
                if (city is None or t.city.lower() == city.lower())
                and (region is None or t.region == region)]
    return answer({"theatres": theatres, "count": len(theatres)})


@access.public
async def theatre_shows(request: web.Request) -> web.Response:
    catalog = request.app[catalog_key]
    theatre = catalog.theatre(ids.theatre_id(request.match_info["theatre_id"]))
    shows = catalog.shows_of(theatre.id)
    badges = await request.app[seatmaps_key].availability(theatre.id, shows)
    return answer({"theatre": theatre.as_json(),
                              "shows": [{**s.as_json(), "availability": badges.get(s.id)}
                                        for s in shows]})


@access.public
async def show_detail(request: web.Request) -> web.Response:
    catalog = request.app[catalog_key]
    show = await catalog.show(ids.show_id(request.match_info["show_id"]))
    theatre = catalog.theatre(show.theatre_id)
    return answer({**show.as_json(), "theatre": theatre.as_json()})


@access.public
async def show_seats(request: web.Request) -> web.Response:
    show = await request.app[catalog_key].show(ids.show_id(request.match_info["show_id"]))
    consistent = request.query.get("consistent", "false").lower()
    if consistent not in ("true", "false", "1", "0"):
        raise InvalidInput("consistent must be true or false", field="consistent")
    seatmaps = request.app[seatmaps_key]
    if consistent in ("true", "1"):
        return answer(await seatmaps.seat_map(show, consistent=True))
    return web.Response(body=await seatmaps.seat_map_body(show), content_type="application/json")
