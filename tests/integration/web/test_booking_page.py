"""The booking page in a real browser against the session cluster: two people on
one show, a whole purchase to the ticket, a hold that expires."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from bookcluster.booking.onsales import GUARD_REFRESH_S
from bookcluster.booking.passes import ADMISSION_HEADER
from bookcluster.local import faults
from bookcluster.topology.model import Endpoint
from tests.integration.conftest import Cluster
from tests.integration.node.helpers import seats_of, shows_in
from tests.integration.support import Session, bearer, call, free_ports, merchant
from tests.integration.web.conftest import Shots, docs_shot

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1200, "height": 900}


@pytest_asyncio.fixture
async def open_page(browser: Any) -> AsyncIterator[Callable[..., Any]]:
    """Opens a page in a context of its own (own storage: another person)."""
    contexts: list[Any] = []
    errors: list[str] = []

    async def opener(url: str, viewport: dict[str, int] = DESKTOP) -> Any:
        # A viewer abroad: the page must still show the theatre's time (IST).
        context = await browser.new_context(viewport=viewport, locale="en-US",
                                            timezone_id="Europe/London")
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        await page.goto(url)
        return page

    yield opener
    for context in contexts:
        await context.close()
    assert not errors, f"JavaScript errors: {errors}"


async def sign_in(page: Any, user: str) -> None:
    await page.fill("#signin-user", user)
    await page.click("#signin button[type=submit]")
    await page.wait_for_selector("#account:not([hidden])")
    assert await page.inner_text("#account-user") == user


async def open_show(page: Any, show: int) -> None:
    await page.evaluate(f"location.hash = '#/show/{show}'")
    await page.wait_for_selector("#live-state[data-state=live]")


def seat(seat_id: str) -> str:
    return f"#seatmap [data-seat={seat_id}]"


async def status_of(page: Any, seat_id: str) -> str:
    return str(await page.get_attribute(seat(seat_id), "data-status"))


async def alert_text(page: Any) -> str:
    await page.wait_for_selector("#alert:not([hidden])")
    return str(await page.inner_text("#alert"))


async def shows_grouped(page: Any, catalog: Any, theatre: str) -> None:
    """A theatre's shows: one day's at a time, each under its movie's heading, the
    times side by side (not one card a row: 48 shows were a 7,000 px column)."""
    screens = {s.id for s in catalog.screens if s.theatre_id == theatre}
    movies = {m.id: m.title for m in catalog.movies}
    listed = {s.id: movies[s.movie_id] for s in catalog.shows if s.screen_id in screens}
    under = await page.eval_on_selector_all(
        ".day:not([hidden]) .movie", "ms => ms.map(m => [m.querySelector('h3').textContent, "
        "[...m.querySelectorAll('.show-card')].map(a => Number(a.dataset.show))])")
    assert {show: title for title, shows in under for show in shows} == listed
    assert len(under) == len(set(listed.values()))  # one heading a movie
    days = await page.eval_on_selector_all(".days button", "bs => bs.map(b => b.textContent)")
    assert len(days) == 1 and await page.get_attribute(".days button", "aria-pressed") == "true"
    tops = await page.eval_on_selector_all(
        ".show-card", "as => as.map(a => Math.round(a.getBoundingClientRect().top))")
    assert len(set(tops)) < len(tops) or len(tops) == 1, tops  # some share a line


async def map_fits_then_pans(page: Any) -> None:
    """A phone sees every seat of the widest row at first; "+" makes seats bigger and
    the map pans sideways, its row letters staying in view; "−" fits it again."""
    fits = ("[...document.querySelectorAll('#seatmap .seat')].every(b => "
            "b.getBoundingClientRect().right <= innerWidth && b.getBoundingClientRect().left >= 0)")
    assert await page.evaluate(fits)
    assert await page.is_disabled("#zoom-out")
    await page.click("#zoom-in")
    await page.click("#zoom-in")
    assert not await page.evaluate(fits)
    assert await page.inner_text("#map-words") == "Swipe sideways for more seats; − shows them all."
    await page.evaluate("(m => { m.scrollLeft = m.scrollWidth; })"
                        "(document.getElementById('map-scroll'))")
    first = await page.evaluate(
        "(r => [r.querySelector('.row-label').getBoundingClientRect().left, "
        "r.querySelector('.seat').getBoundingClientRect().left])"
        "(document.querySelector('#seatmap .row'))")
    assert first[0] >= 0 and first[1] < 0, first  # the letter in view, its row's start not
    await page.evaluate("document.getElementById('map-scroll').scrollIntoView()")
    await docs_shot(page, "booking-phone-zoomed")
    await page.click("#zoom-out")
    await page.click("#zoom-out")
    assert await page.evaluate(fits) and await page.is_disabled("#zoom-out")


async def pay_at_the_thumb(page: Any) -> None:
    """After a hold: the hold panel (timer, Pay) in the pick bar's place, at the bottom of
    the window even scrolled to the page's top (not below the map), and Pay has the focus."""
    assert await page.is_hidden("#selection")
    assert await page.evaluate("document.activeElement.id") == "pay"
    await page.evaluate("window.scrollTo(0, 0)")
    box = await page.evaluate("JSON.stringify(document.getElementById('pay')"
                              ".getBoundingClientRect())")
    pay = json.loads(box)
    height = await page.evaluate("innerHeight")
    assert height / 2 < pay["top"] and pay["bottom"] <= height, (pay, height)
    assert re.fullmatch(r"\d+:\d\d", await page.inner_text("#countdown"))


async def test_two_browsers_on_one_show(clean: Cluster, catalog: Any, open_page: Any,
                                        http: aiohttp.ClientSession, shots: Shots) -> None:
    """Asha (north node) holds a seat; Ravi (a south node) sees it taken within 1 s,
    is told so, and his attempts on it get the right words. Then Ravi's live feed
    is frozen while Carol takes a seat he picked: his hold is refused, naming it;
    a dropped socket shows "reconnecting…" and the map resyncs."""
    show = shows_in(clean, catalog, "north")[0]
    first, second, third = seats_of(catalog, show)[20:23]
    asha = await open_page(f"{clean.node('north')}/")
    ravi = await open_page("about:blank")
    frozen: list[bool] = [False]
    sockets: list[Any] = []
    sent: list[str] = []  # what Ravi's page sent on its sockets

    def route(ws: Any) -> None:
        """Ravi's live socket, through a switch that can hold back the node's frames."""
        server = ws.connect_to_server()
        server.on_message(lambda message: None if frozen[0] else ws.send(message))

        def upstream(message: str | bytes) -> None:
            sent.append(str(message))
            server.send(message)

        ws.on_message(upstream)
        sockets.append(ws)

    await ravi.route_web_socket("**/live", route)
    await ravi.goto(f"{clean.node('south')}/")
    await sign_in(asha, "asha")
    await sign_in(ravi, "ravi")
    await open_show(asha, show)
    await open_show(ravi, show)

    await ravi.click(seat(first))
    assert await status_of(ravi, first) == "AVAILABLE"
    assert await ravi.get_attribute(seat(first), "aria-pressed") == "true"
    await asha.click(seat(first))
    async with asha.expect_response(lambda r: "/lock" in r.url) as answer:
        await asha.click("#hold")
    assert (await answer.value).status == 201
    held_at = time.monotonic()
    await ravi.wait_for_selector(f"{seat(first)}[data-status=LOCKED]", timeout=5000)
    seen_after = time.monotonic() - held_at
    print(f"Ravi saw {first} taken {seen_after * 1000:.0f} ms after Asha's hold answered")
    assert seen_after < 1.0
    assert await status_of(asha, first) == "MINE"
    assert f"Seat {first} was just taken by someone else" in await alert_text(ravi)
    assert await ravi.get_attribute(seat(first), "aria-pressed") == "false"
    assert "taken" in str(await ravi.get_attribute(seat(first), "aria-label"))
    await shots.take(asha, "asha-holds")
    await shots.take(ravi, "ravi-sees-it-taken")

    # A taken seat stays focusable (aria-disabled): the keyboard reaches it and hears why.
    await ravi.focus(seat(first))
    await ravi.keyboard.press("Enter")
    assert await alert_text(ravi) == f"Seat {first} is already taken. Please pick another seat."
    assert await ravi.is_disabled("#hold")

    # A stale view: the node's frames held back while Carol takes the seat Ravi picks.
    frozen[0] = True
    await ravi.click(seat(second))
    status, _ = await call(http, "POST", f"{clean.node('north')}/booking/seats/{show}/lock",
                           json={"user_id": "carol", "seat_ids": [second]})
    assert status == 201
    assert await status_of(ravi, second) == "AVAILABLE"  # he cannot know yet
    async with ravi.expect_response(lambda r: "/lock" in r.url) as answer:
        await ravi.click("#hold")
    assert (await answer.value).status == 409
    assert await alert_text(ravi) == (f"Seat {second} was just taken by someone else. "
                                      "Please pick other seats.")
    await shots.take(ravi, "ravi-refused")

    # Frames dropped while frozen are a gap: the next change makes the page resync.
    frozen[0] = False
    status, _ = await call(http, "POST", f"{clean.node('north')}/booking/seats/{show}/lock",
                           json={"user_id": "carol", "seat_ids": [third]})
    assert status == 201
    await ravi.wait_for_selector(f"{seat(third)}[data-status=LOCKED]", timeout=5000)
    assert sent == ['{"type":"resync"}']
    assert await status_of(ravi, second) == "LOCKED"
    await ravi.wait_for_selector("#live-state[data-state=live]")

    # The node's socket closes: "reconnecting…", then a new socket whose snapshot has
    # what changed meanwhile.
    await sockets[-1].close(code=1011, reason="test")
    await ravi.wait_for_selector("#live-state[data-state=reconnecting]", timeout=5000)
    assert await ravi.inner_text("#live-state") == "reconnecting…"
    await shots.take(ravi, "ravi-reconnecting", full_page=False)
    status, _ = await call(http, "POST", f"{clean.node('north')}/booking/booking/"
                           f"{(await held_booking(clean, show, 'carol'))[0]}/cancel")
    assert status == 200
    await ravi.wait_for_selector("#live-state[data-state=live]", timeout=10000)
    assert len(sockets) >= 2
    await ravi.wait_for_selector(f"{seat(second)}[data-status=AVAILABLE]", timeout=5000)
    assert await status_of(ravi, first) == "LOCKED"


async def held_booking(cluster: Cluster, show: int, user: str) -> list[str]:
    rows = await cluster.fetch("north", "SELECT id FROM booking WHERE show_id = $1 AND "
                               "user_id = $2 AND status = 'INITIATED' ORDER BY created_at",
                               show, user)
    return [r["id"] for r in rows]


def rupees(paise: int) -> str:
    return f"₹{paise // 100:,}"


async def gateway_intent(http: aiohttp.ClientSession, payment_id: str) -> dict[str, Any]:
    """The intent as the gateway simulator knows it (its merchant API)."""
    gateway = Session.topology.payments.gateway  # type: ignore[union-attr]
    async with http.get(f"http://{gateway}/intents/{payment_id}", headers=merchant()) as resp:
        assert resp.status == 200
        return dict(await resp.json())


async def at_checkout(page: Any, http: aiohttp.ClientSession, node: str) -> dict[str, Any]:
    """The page went to the gateway's checkout: the intent there, waiting for the
    customer, made to send the browser back to the node's page."""
    gateway = Session.topology.payments.gateway  # type: ignore[union-attr]
    await page.wait_for_url(re.compile(rf"^http://{gateway}/checkout/pay_[0-9a-f]+$"))
    intent = await gateway_intent(http, page.url.rsplit("/", 1)[1])
    assert intent["status"] == "PENDING"
    assert intent["return_url"] == (f"{node}/#/booking/{intent['booking_id']}"
                                    "/payment/{PAYMENT_ID}")
    return intent


async def test_whole_purchase_to_the_ticket(clean: Cluster, catalog: Any, open_page: Any,
                                            http: aiohttp.ClientSession, shots: Shots) -> None:
    """From the city list to the ticket's QR code, on a phone's width, seats picked with
    the keyboard, paid on the gateway simulator's checkout page (which sends the browser
    back to the booking); then under "My bookings"."""
    show = shows_in(clean, catalog, "south")[0]
    theatre = catalog.theatre_of_screen()[next(s.screen_id for s in catalog.shows
                                                if s.id == show)]
    city = next(t.city_id for t in catalog.theatres if t.id == theatre)
    city_name = next(c.name for c in catalog.cities if c.id == city)
    page = await open_page(f"{clean.node('north')}/", PHONE)
    writes: list[str] = []  # where the page sent each booking write
    page.on("request", lambda r: writes.append(r.url)
            if r.method == "POST" and "/booking/" in r.url else None)
    await sign_in(page, "meera")
    await page.wait_for_selector("#theatres li")
    await page.select_option("#city", city_name)
    await page.click(f"#theatres a[href='#/theatre/{theatre}']")
    await page.wait_for_selector(f".show-card[data-show='{show}']")
    assert "times in IST" in await page.inner_text(".day:not([hidden]) h2")
    assert "left" in await page.inner_text(f".show-card[data-show='{show}'] .badge")
    await shows_grouped(page, catalog, theatre)
    await shots.take(page, "shows")
    await docs_shot(page, "shows-phone")
    await page.click(f".show-card[data-show='{show}']")
    await page.wait_for_selector("#live-state[data-state=live]")
    await map_fits_then_pans(page)

    picked = seats_of(catalog, show)[:2]
    for seat_id in picked:  # the keyboard: focus the seat's button, press Space
        await page.focus(seat(seat_id))
        await page.keyboard.press("Space")
        assert await page.get_attribute(seat(seat_id), "aria-pressed") == "true"
    label = str(await page.get_attribute(seat(picked[0]), "aria-label"))
    row, number = re.fullmatch(r"([A-Z]+)([0-9]+)", picked[0]).groups()  # type: ignore[union-attr]
    assert label.startswith(f"Row {row} seat {number}, ") and "₹" in label
    legend = await page.inner_text("#legend")
    assert "₹" in legend and "Taken" in legend
    # Readable on a phone: the page itself does not scroll sideways (the map may).
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await shots.take(page, "seat-map-phone")
    await page.focus("#hold")
    async with page.expect_response(lambda r: "/lock" in r.url) as answer:
        await page.keyboard.press("Enter")
    booking_id = (await (await answer.value).json())["booking_id"]
    await page.wait_for_selector("#view-hold:not([hidden])")
    await pay_at_the_thumb(page)
    assert booking_id not in await page.inner_text("body")  # no raw ids for customers
    await page.evaluate("document.getElementById('map-scroll').scrollIntoView()")
    await docs_shot(page, "booking-phone")
    first_deadline = await page.inner_text("#countdown")
    assert first_deadline.count(":") == 1
    await page.click("#extend")
    await page.wait_for_selector("#notice:has-text('Held until')")
    await shots.take(page, "held")

    # Pay at the gateway simulator's checkout page, which sends the browser back.
    await page.click("#pay")
    intent = await at_checkout(page, http, clean.node("north"))
    assert await page.inner_text("#amount") == rupees(intent["amount_paise"])
    await shots.take(page, "checkout")
    await page.click(f"button:has-text('Pay {rupees(intent['amount_paise'])}')")
    await page.wait_for_selector("#view-booking:not([hidden])", timeout=20000)
    assert page.url.startswith(f"{clean.node('north')}/#/booking/")
    assert await page.inner_text("#h-booking") == "You're booked!"
    await page.wait_for_selector("#ticket:not([hidden])", timeout=20000)
    assert await page.evaluate("document.getElementById('ticket-img').naturalWidth") > 100
    href = str(await page.get_attribute("#ticket-link", "href"))
    assert href.startswith("blob:")
    await shots.take(page, "ticket")
    assert page.url.rsplit("/", 1)[1] == booking_id
    assert booking_id not in await page.inner_text("body")
    # Hold, extend, pay and confirm went straight to the show's home (south) nodes.
    assert {url.split("/booking/")[0] for url in writes} <= set(clean.nodes("south"))
    # The page confirms unless the gateway's webhook sold the booking before it came back.
    assert {url.rsplit("/", 1)[1] for url in writes} >= {"lock", "extend", "pay"}
    rows = await clean.fetch("south", "SELECT status, user_id FROM booking WHERE id = $1",
                             booking_id)
    assert [(r["status"], r["user_id"]) for r in rows] == [("CONFIRMED", "meera")]
    sold = await clean.fetch("south", "SELECT seat_id FROM show_seat WHERE show_id = $1 "
                             "AND status = 'BOOKED' ORDER BY seat_id", show)
    assert sorted(r["seat_id"] for r in sold) == sorted(picked)
    # Paid through the gateway: the payment recorded is the intent the customer paid.
    paid = await clean.fetch("south", "SELECT id, status FROM payment WHERE booking_id = $1",
                             booking_id)
    assert [(r["id"], r["status"]) for r in paid] == [(intent["id"], "CAPTURED")]
    assert (await gateway_intent(http, intent["id"]))["status"] == "CAPTURED"

    await page.click("a[href='#/bookings']")
    await page.wait_for_selector(f"#bookings a[href='#/booking/{booking_id}']")
    assert "CONFIRMED" in await page.inner_text(f"#bookings a[href='#/booking/{booking_id}']")
    await shots.take(page, "my-bookings")


async def test_an_expiring_hold(clean: Cluster, catalog: Any, open_page: Any,
                                shots: Shots) -> None:
    """On the node whose holds last 1.5 s: the countdown runs out, the page says so in
    plain words, the seat is free again, and paying is no longer offered."""
    show = shows_in(clean, catalog, "north")[1]
    seat_id = seats_of(catalog, show)[5]
    page = await open_page(f"{clean.short_ttl_node}/")
    await sign_in(page, "ira")
    await open_show(page, show)
    await page.click(seat(seat_id))
    await page.click("#hold")
    await page.wait_for_selector("#view-hold:not([hidden])")
    assert await status_of(page, seat_id) == "MINE"
    await shots.take(page, "held")
    assert await alert_text(page) == ("Your hold has expired and the seats were released. "
                                      "Pick seats again to book.")
    assert await page.inner_text("#h-hold") == "Your hold has expired"
    assert await page.is_disabled("#pay") and await page.is_disabled("#extend")
    await page.wait_for_selector(f"{seat(seat_id)}[data-status=AVAILABLE]", timeout=5000)
    await shots.take(page, "expired")
    # The page's word is the cluster's: the sweeper expires the booking.
    for _ in range(100):
        rows = await clean.fetch("north", "SELECT status FROM booking WHERE user_id = 'ira'")
        if [r["status"] for r in rows] == ["EXPIRED"]:
            break
        await asyncio.sleep(0.1)
    assert [r["status"] for r in rows] == ["EXPIRED"]


async def test_a_write_goes_through_the_page_node_when_home_nodes_do_not_answer(
        clean: Cluster, catalog: Any, open_page: Any) -> None:
    """The show's home nodes refuse the browser's connections: the hold goes to the node
    that served the page, which forwards it, and the seat is held once."""
    show = shows_in(clean, catalog, "west")[1]
    seat_id = seats_of(catalog, show)[9]
    page = await open_page(f"{clean.node('north')}/")
    homes = tuple(clean.nodes("west"))
    tried: list[str] = []

    async def refuse(route: Any) -> None:
        tried.append(route.request.url)
        await route.abort("connectionrefused")

    await page.route(lambda url: url.startswith(homes), refuse)
    await sign_in(page, "nina")
    await open_show(page, show)
    await page.click(seat(seat_id))
    async with page.expect_response(
            lambda r: r.url.startswith(clean.node("north")) and "/lock" in r.url) as answer:
        await page.click("#hold")
    assert (await answer.value).status == 201
    await page.wait_for_selector("#view-hold:not([hidden])")
    assert await status_of(page, seat_id) == "MINE"
    assert {url.rsplit("/", 1)[1] for url in tried} == {"lock"}
    rows = await clean.fetch("west", "SELECT status FROM booking WHERE user_id = 'nina'")
    assert [r["status"] for r in rows] == ["INITIATED"]


async def test_theatres_page_fits_a_phone(clean: Cluster, open_page: Any,
                                          shots: Shots) -> None:
    page = await open_page(f"{clean.node('west')}/", PHONE)
    await page.wait_for_selector("#theatres li")
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    assert await page.inner_text("#signin label") == "Your name"
    await shots.take(page, "theatres-phone")


async def test_region_unavailable_in_plain_words(clean: Cluster, catalog: Any, open_page: Any,
                                                 shots: Shots) -> None:
    """A hold while the show's home Redis master is stopped: the page says which region
    and when to retry, keeps the selection, and the retry (same Idempotency-Key) holds."""
    show = shows_in(clean, catalog, "south")[1]
    seat_id = seats_of(catalog, show)[7]
    page = await open_page(f"{clean.node('west')}/")
    await sign_in(page, "tara")
    await open_show(page, show)
    await page.click(seat(seat_id))
    keys: list[str | None] = []
    page.on("request", lambda r: keys.append(r.headers.get("idempotency-key"))
            if "/lock" in r.url else None)
    with faults.paused(clean.launcher.child("south.redis.master").pid):
        async with page.expect_response(lambda r: "/lock" in r.url) as answer:
            await page.click("#hold")
        assert (await answer.value).status == 503
        words = await alert_text(page)
        assert words.startswith("The south region can't take bookings right now. "
                                "Please retry in 1 s."), words
        assert await page.get_attribute(seat(seat_id), "aria-pressed") == "true"
        await shots.take(page, "region-unavailable")
    async with page.expect_response(lambda r: "/lock" in r.url) as answer:
        await page.click("#hold")
    assert (await answer.value).status == 201
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]
    await page.wait_for_selector("#view-hold:not([hidden])")


async def test_a_declined_payment(clean: Cluster, catalog: Any, open_page: Any,
                                  http: aiohttp.ClientSession, shots: Shots) -> None:
    """Declined on the checkout page: back on the booking page, the person is told, and
    the gateway's webhook makes the region cancel the booking and free the seat."""
    show = shows_in(clean, catalog, "west")[0]
    seat_id = seats_of(catalog, show)[3]
    page = await open_page(f"{clean.node('west')}/")
    await sign_in(page, "dev")
    await open_show(page, show)
    await page.click(seat(seat_id))
    await page.click("#hold")
    await page.wait_for_selector("#view-hold:not([hidden])")
    await page.click("#pay")
    intent = await at_checkout(page, http, clean.node("west"))
    await shots.take(page, "checkout")
    await page.click("button:has-text('Decline')")
    assert await alert_text(page) == ("The payment was declined, so your hold is released. "
                                      "Pick seats again to book.")
    assert page.url.startswith(f"{clean.node('west')}/#/")
    await shots.take(page, "declined")
    assert (await gateway_intent(http, intent["id"]))["status"] == "FAILED"
    for _ in range(100):
        rows = await clean.fetch("west", "SELECT status FROM booking WHERE id = $1",
                                 intent["booking_id"])
        if [r["status"] for r in rows] == ["CANCELLED"]:
            break
        await asyncio.sleep(0.1)
    assert [r["status"] for r in rows] == ["CANCELLED"]
    await open_show(page, show)
    await page.wait_for_selector(f"{seat(seat_id)}[data-status=AVAILABLE]", timeout=10000)


async def test_too_many_requests_in_plain_words(clean: Cluster, catalog: Any, open_page: Any,
                                                run_dir: Path, shots: Shots) -> None:
    """A north node whose topology allows a user 2 writes and then one every 5 s: a hold
    and an extension pass, the next extension is refused (429, Retry-After) and the page
    says so in plain words; the hold is untouched."""
    strict = run_dir / "topology-strict-writes.yaml"
    text = clean.topology.path.read_text()
    assert "user_writes: {per_second: 50, burst: 100}" in text
    strict.write_text(text.replace("user_writes: {per_second: 50, burst: 100}",
                                   "user_writes: {per_second: 0.2, burst: 2}"))
    port = free_ports(1)[0]
    await clean.launcher.start_extra_node("north", Endpoint("127.0.0.1", port),
                                          ["--topology", str(strict)])
    show = shows_in(clean, catalog, "north")[0]
    seat_id = seats_of(catalog, show)[9]
    page = await open_page(f"http://127.0.0.1:{port}/")
    await sign_in(page, "quick")
    await open_show(page, show)
    await page.click(seat(seat_id))
    await page.click("#hold")
    await page.wait_for_selector("#view-hold:not([hidden])")
    await page.click("#extend")
    await page.wait_for_selector("#notice:has-text('Held until')")
    async with page.expect_response(lambda r: r.url.endswith("/extend")) as answer:
        await page.click("#extend")
    refused = await answer.value
    assert refused.status == 429
    wait_s = int(refused.headers["retry-after"])
    assert 1 <= wait_s <= 5
    assert await alert_text(page) == f"Too many requests. Please wait {wait_s} s and try again."
    assert not await page.is_disabled("#pay")  # still held: nothing changed
    await shots.take(page, "too-many-requests")


async def test_best_available_to_the_ticket(clean: Cluster, catalog: Any, open_page: Any,
                                            http: aiohttp.ClientSession, shots: Shots) -> None:
    """On a phone's width, on a node of another region: "Best available: 3 seats" holds
    the block the home master chose, those seats show as held by you, and the normal pay
    and confirm path sells exactly them. Then, with every recliner of the show but one
    taken, best available for 2 recliners is refused (409 no_block_available) in plain
    words and nothing is held."""
    show = shows_in(clean, catalog, "north")[0]
    screen = next(s.screen_id for s in catalog.shows if s.id == show)
    page = await open_page(f"{clean.node('south')}/", PHONE)
    await sign_in(page, "bela")
    await open_show(page, show)
    assert await page.evaluate("document.documentElement.scrollWidth <= innerWidth")
    categories = await page.eval_on_selector_all("#best-category option",
                                                 "options => options.map(o => o.value)")
    assert set(categories) == {"", *(s.category for s in catalog.seats
                                     if s.screen_id == screen)}
    await page.select_option("#best-count", "3")
    await shots.take(page, "best-available-phone")
    async with page.expect_response(lambda r: r.url.endswith(f"/booking/seats/{show}/best")
                                    ) as answer:
        await page.click("#best-hold")
    response = await answer.value
    assert response.status == 201
    held = await response.json()
    chosen = held["seat_ids"]
    assert len(chosen) == 3 and len(held["seats"]) == 3
    for seat_id in chosen:
        await page.wait_for_selector(f"{seat(seat_id)}[data-status=MINE]", timeout=5000)
    await page.wait_for_selector("#view-hold:not([hidden])")
    assert await page.inner_text("#notice") == (
        f"Held the best seats for you: {', '.join(chosen[:-1])} and {chosen[-1]}.")
    assert await page.inner_text("#hold-summary") == (
        f"Seats {', '.join(chosen[:-1])} and {chosen[-1]} · {rupees(held['amount_paise'])}")
    assert held["booking_id"] not in await page.inner_text("body")
    await pay_at_the_thumb(page)
    rows = await clean.fetch("north", "SELECT b.status, array_agg(bs.seat_id ORDER BY "
                             "bs.seat_id) AS seats FROM booking b JOIN booking_seat bs ON "
                             "bs.booking_id = b.id WHERE b.user_id = 'bela' GROUP BY b.id")
    assert [(r["status"], list(r["seats"])) for r in rows] == [("INITIATED", sorted(chosen))]
    await shots.take(page, "best-held")

    # The normal path from here: the gateway's checkout page, back to the ticket.
    await page.click("#pay")
    intent = await at_checkout(page, http, clean.node("south"))
    await page.click(f"button:has-text('Pay {rupees(intent['amount_paise'])}')")
    await page.wait_for_selector("#view-booking:not([hidden])", timeout=20000)
    assert await page.inner_text("#h-booking") == "You're booked!"
    sold = await clean.fetch("north", "SELECT ss.seat_id FROM show_seat ss JOIN booking b "
                             "ON b.id = ss.booked_booking_id WHERE ss.show_id = $1 AND ss.status = "
                             "'BOOKED' AND b.user_id = 'bela' AND b.status = 'CONFIRMED'",
                             show)
    assert sorted(r["seat_id"] for r in sold) == sorted(chosen)
    await shots.take(page, "best-booked")

    # Every recliner but one taken (by others, ten at a time): no block of 2 is left.
    recliners = [s.seat_id for s in catalog.seats if s.screen_id == screen
                 and s.category == "RECLINER" and not s.blocked and s.seat_id not in chosen]
    *taken, last = recliners
    for i in range(0, len(taken), 10):
        status, body = await call(http, "POST",
                                  f"{clean.node('north')}/booking/seats/{show}/lock",
                                  json={"user_id": f"filler{i}", "seat_ids": taken[i:i + 10]})
        assert status == 201, body
    await open_show(page, show)
    await page.wait_for_selector(f"{seat(taken[0])}[data-status=LOCKED]", timeout=5000)
    assert await status_of(page, last) == "AVAILABLE"
    await page.select_option("#best-count", "2")
    await page.select_option("#best-category", "RECLINER")
    async with page.expect_response(lambda r: r.url.endswith(f"/booking/seats/{show}/best")
                                    ) as answer:
        await page.click("#best-hold")
    refused = await answer.value
    assert refused.status == 409
    assert (await refused.json())["error"] == "no_block_available"
    assert await alert_text(page) == (
        'No 2 seats side by side are free in RECLINER any more. Try fewer seats, another '
        'category, "apart is fine", or pick seats on the map.')
    assert await status_of(page, last) == "AVAILABLE"
    assert not await page.is_disabled("#best-hold")
    await shots.take(page, "best-none-left")
    rows = await clean.fetch("north", "SELECT status FROM booking WHERE user_id = 'bela' "
                             "ORDER BY created_at")
    assert [r["status"] for r in rows] == ["CONFIRMED"]


async def test_a_pick_that_leaves_a_seat_alone_is_held_with_a_warning(
        clean: Cluster, catalog: Any, open_page: Any, shots: Shots) -> None:
    """Seats 2 and 3 of a row picked by hand on a screen that warns (the default): the
    hold is made, and the page says which seat it leaves on its own (seat 1, at the
    row's end); a pick that leaves nobody alone has no warning."""
    show = shows_in(clean, catalog, "south")[1]
    screen = next(s.screen_id for s in catalog.shows if s.id == show)
    by_row: dict[str, dict[int, Any]] = {}
    for s in catalog.seats:
        if s.screen_id == screen:
            by_row.setdefault(s.row_label, {})[s.number] = s
    row = next(r for r, seats in by_row.items()
               if all(n in seats and not seats[n].blocked for n in range(1, 4)))
    page = await open_page(f"{clean.node('west')}/")
    await sign_in(page, "omar")
    await open_show(page, show)
    for number in (2, 3):
        await page.click(seat(f"{row}{number}"))
    async with page.expect_response(lambda r: r.url.endswith(f"/booking/seats/{show}/lock")
                                    ) as answer:
        await page.click("#hold")
    response = await answer.value
    assert response.status == 201
    assert (await response.json())["orphaned"] == [f"{row}1"]
    await page.wait_for_selector("#hold-warning:not([hidden])")
    assert await page.inner_text("#hold-warning") == (
        f"Your seats leave seat {row}1 on its own, where nobody is likely to buy it. "
        "You can release them and pick again.")
    assert await status_of(page, f"{row}2") == "MINE"
    await shots.take(page, "orphan-warning")
    # A desktop too: Pay in view without scrolling past the map, in the pick bar's place.
    await pay_at_the_thumb(page)
    await docs_shot(page, "booking-desktop")
    # While the hold is being paid for, a tap on the map says so and picks nothing.
    await page.click(seat(f"{row}5"))
    assert await alert_text(page) == (f"Seats {row}2 and {row}3 are held for you: pay for "
                                      "them, or release them to pick others.")
    assert await page.get_attribute(seat(f"{row}5"), "aria-pressed") == "false"

    # Released, then seats 1 and 2: nobody is left alone, no warning.
    await page.click("#cancel")
    await page.wait_for_selector("#notice:has-text('Seats released.')")
    await page.wait_for_selector(f"{seat(f'{row}2')}[data-status=AVAILABLE]", timeout=5000)
    assert await page.is_hidden("#view-hold") and await page.is_visible("#selection")
    for number in (1, 2):
        await page.click(seat(f"{row}{number}"))
    async with page.expect_response(lambda r: r.url.endswith(f"/booking/seats/{show}/lock")
                                    ) as answer:
        await page.click("#hold")
    response = await answer.value
    assert response.status == 201 and "orphaned" not in await response.json()
    await page.wait_for_selector("#view-hold:not([hidden])")
    assert await page.is_hidden("#hold-warning")


async def test_best_available_while_the_region_is_down_then_its_retry(
        clean: Cluster, catalog: Any, open_page: Any, shots: Shots) -> None:
    """Best available while the show's home Redis master is stopped: the page says which
    region and when to retry; the retry (same Idempotency-Key, same request) holds once,
    and the seats it chose are the page's hold."""
    show = shows_in(clean, catalog, "south")[0]
    page = await open_page(f"{clean.node('west')}/")
    await sign_in(page, "kiran")
    await open_show(page, show)
    await page.select_option("#best-count", "2")
    keys: list[str | None] = []
    page.on("request", lambda r: keys.append(r.headers.get("idempotency-key"))
            if r.url.endswith("/best") else None)
    with faults.paused(clean.launcher.child("south.redis.master").pid):
        async with page.expect_response(lambda r: r.url.endswith("/best")) as answer:
            await page.click("#best-hold")
        assert (await answer.value).status == 503
        words = await alert_text(page)
        assert words.startswith("The south region can't take bookings right now. "
                                "Please retry in "), words
        assert await page.is_hidden("#view-hold")
        await shots.take(page, "best-region-unavailable")
    async with page.expect_response(lambda r: r.url.endswith("/best")) as answer:
        await page.click("#best-hold")
    response = await answer.value
    assert response.status == 201
    chosen = (await response.json())["seat_ids"]
    assert len(keys) == 2 and keys[0] is not None and keys[0] == keys[1]
    await page.wait_for_selector("#view-hold:not([hidden])")
    for seat_id in chosen:
        await page.wait_for_selector(f"{seat(seat_id)}[data-status=MINE]", timeout=5000)
    rows = await clean.fetch("south", "SELECT b.status, array_agg(bs.seat_id ORDER BY "
                             "bs.seat_id) AS seats FROM booking b JOIN booking_seat bs ON "
                             "bs.booking_id = b.id WHERE b.user_id = 'kiran' GROUP BY b.id")
    assert [(r["status"], list(r["seats"])) for r in rows] == [("INITIATED", sorted(chosen))]


async def create_onsale(http: aiohttp.ClientSession, node: str, shows: list[int],
                        sale_in_s: float, window_s: int = 120, max_party: int = 2) -> str:
    now = datetime.now(UTC)
    body = {"shows": shows, "opens_at": (now - timedelta(seconds=1)).isoformat(),
            "sale_at": (now + timedelta(seconds=sale_in_s)).isoformat(),
            "window_s": window_s, "max_party": max_party}
    status, created = await call(http, "POST", f"{node}/ops/onsales", json=body,
                                 headers=bearer("web-operator", ("operator",)))
    assert status == 201, created
    return str(created["id"])


async def test_the_queue_before_the_seat_map(onsales: Cluster, catalog: Any, open_page: Any,
                                             http: aiohttp.ClientSession,
                                             shots: Shots) -> None:
    """An operator opens an on-sale for a show while Asha (desktop, a north node) has its
    map open: her hold is refused and the page shows the queue instead. Ravi (a phone, a
    south node) opening the show sees the queue at once. Both join, wait for the draw,
    are admitted; the seat map opens with the shopping window's timer, and their holds
    (picked, best available) carry the pass. Positions come from the page's node: pushed
    over its WebSocket (Ravi), or polled where the socket fails (Asha's is refused)."""
    cluster = onsales
    show = shows_in(cluster, catalog, "north")[0]
    seats = seats_of(catalog, show)
    asha = await open_page(f"{cluster.node('north')}/")
    await sign_in(asha, "asha-q")
    await open_show(asha, show)
    # Asha's queue socket goes to a path no node serves: her page polls instead.
    await asha.evaluate("""() => {
      const Native = window.WebSocket;
      window.WebSocket = class extends Native {
        constructor(url, protocols) {
          super(String(url).replace(/\\/onsales\\/([^/]+)\\/live/, "/onsales/$1/gone"),
                protocols);
        }
      };
    }""")
    asha_polled: list[str] = []
    asha.on("request", lambda r: asha_polled.append(r.url) if "/position" in r.url else None)
    onsale = await create_onsale(http, cluster.node("west"), [show], sale_in_s=15)
    await asyncio.sleep(GUARD_REFRESH_S + 0.5)  # every node's hold path knows it

    await asha.click(seat(seats[0]))
    async with asha.expect_response(lambda r: "/lock" in r.url) as answer:
        await asha.click("#hold")
    assert (await answer.value).status == 403
    await asha.wait_for_selector("#queue:not([hidden]) #queue-join:not([hidden])")
    assert await asha.is_hidden("#shop")
    assert "Join the queue to pick seats" in await alert_text(asha)

    async def listed() -> bool:
        _, body = await call(http, "GET", f"{cluster.node('south')}/onsales")
        return onsale in [o["id"] for o in body["onsales"]]
    for _ in range(50):
        if await listed():
            break
        await asyncio.sleep(0.2)
    ravi = await open_page(f"{cluster.node('south')}/", PHONE)
    polled: list[str] = []
    ravi.on("request", lambda r: polled.append(r.url) if "/position" in r.url else None)
    sockets: list[str] = []
    ravi.on("websocket", lambda ws: sockets.append(ws.url) if "/onsales/" in ws.url else None)
    await sign_in(ravi, "ravi-q")
    await ravi.evaluate(f"location.hash = '#/show/{show}'")
    await ravi.wait_for_selector("#queue:not([hidden]) #queue-join:not([hidden])")
    assert await ravi.is_hidden("#shop")
    assert "random place" in await ravi.inner_text("#queue-intro")

    for page in (asha, ravi):
        async with page.expect_response(lambda r: r.url.endswith(f"/onsales/{onsale}/join")
                                        ) as joined:
            await page.click("#queue-join")
        assert (await joined.value).status == 200
        await page.wait_for_selector("#queue-status:not([hidden])")
    assert await ravi.inner_text("#queue-place") == "drawn at the start"
    assert "Places are drawn when the sale starts" in await ravi.inner_text("#queue-words")
    assert await ravi.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await shots.take(ravi, "waiting-phone")
    await shots.take(asha, "waiting")

    for page in (asha, ravi):  # admitted: the map and the window's timer
        await page.wait_for_selector("#shop:not([hidden]) #live-state[data-state=live]",
                                     timeout=30000)
        assert await page.is_hidden("#queue")
        await page.wait_for_selector("#window:not([hidden])")
        assert re.fullmatch(r"[12]:\d\d", await page.inner_text("#window-timer"))
    south = cluster.node("south").replace("http://", "ws://")
    assert sockets and all(u.startswith(f"{south}/onsales/{onsale}/live?ticket=")
                           for u in sockets), sockets
    assert all(u.startswith(cluster.node("south")) for u in polled), polled
    assert asha_polled and all(u.startswith(cluster.node("north")) for u in asha_polled)
    assert await ravi.evaluate("document.documentElement.scrollWidth <= innerWidth")
    await shots.take(ravi, "admitted-phone")

    await asha.click(seat(seats[1]))
    async with asha.expect_response(lambda r: "/lock" in r.url) as answer:
        await asha.click("#hold")
    response = await answer.value
    assert response.status == 201
    assert (await response.request.all_headers()).get(ADMISSION_HEADER.lower())
    await asha.wait_for_selector("#view-hold:not([hidden])")
    await asha.wait_for_selector("#window:not([hidden])")
    await shots.take(asha, "held-with-the-pass")

    await ravi.select_option("#best-count", "2")
    async with ravi.expect_response(lambda r: r.url.endswith(f"/booking/seats/{show}/best")
                                    ) as answer:
        await ravi.click("#best-hold")
    response = await answer.value
    assert response.status == 201, await response.text()
    await ravi.wait_for_selector("#view-hold:not([hidden])")
    await shots.take(ravi, "best-held-phone")
    used = await cluster.fetch("north", "SELECT u.user_id, b.status FROM onsale_pass_use u "
                               "JOIN booking b ON b.id = u.booking_id WHERE u.onsale_id = $1 "
                               "ORDER BY u.user_id", onsale)
    assert [(r["user_id"], r["status"]) for r in used] == [("asha-q", "INITIATED"),
                                                          ("ravi-q", "INITIATED")]
