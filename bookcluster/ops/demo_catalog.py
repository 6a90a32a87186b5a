"""The demo catalog: Indian cities, theatres, screens, seat layouts and shows.

Deterministic for a given spec and start date, so `topology.yaml` can carry
the explicit theatre -> region map of exactly these theatres.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from bookcluster.booking.formats import DEFAULT_ZONE, UnknownTimeZone, zone

# region -> [(city, state, localities)]
CITIES: dict[str, list[tuple[str, str, list[str]]]] = {
    "north": [
        ("Delhi", "Delhi", ["Saket", "Connaught Place", "Vasant Kunj", "Rajouri Garden"]),
        ("Gurugram", "Haryana", ["Cyber Hub", "Sector 29", "Ambience Mall"]),
        ("Noida", "Uttar Pradesh", ["Sector 18", "Great India Place", "Gaur City"]),
        ("Chandigarh", "Chandigarh", ["Elante", "Sector 17", "Zirakpur"]),
        ("Lucknow", "Uttar Pradesh", ["Hazratganj", "Gomti Nagar", "Alambagh"]),
        ("Jaipur", "Rajasthan", ["Raj Mandir", "Malviya Nagar", "Vaishali Nagar"]),
        ("Amritsar", "Punjab", ["Ranjit Avenue", "Lawrence Road", "Golden Gate"]),
    ],
    "south": [
        ("Bengaluru", "Karnataka", ["Koramangala", "Whitefield", "Indiranagar", "Jayanagar"]),
        ("Chennai", "Tamil Nadu", ["T. Nagar", "Velachery", "Anna Nagar"]),
        ("Hyderabad", "Telangana", ["Banjara Hills", "Gachibowli", "Kukatpally"]),
        ("Kochi", "Kerala", ["Edappally", "Marine Drive", "Kakkanad"]),
        ("Mysuru", "Karnataka", ["Sayyaji Rao Road", "Vijayanagar", "Hebbal"]),
        ("Coimbatore", "Tamil Nadu", ["RS Puram", "Gandhipuram", "Peelamedu"]),
        ("Visakhapatnam", "Andhra Pradesh", ["Beach Road", "Dwaraka Nagar", "MVP Colony"]),
    ],
    "west": [
        ("Mumbai", "Maharashtra", ["Andheri", "Lower Parel", "Bandra", "Powai"]),
        ("Pune", "Maharashtra", ["Koregaon Park", "Kothrud", "Viman Nagar"]),
        ("Ahmedabad", "Gujarat", ["SG Highway", "Navrangpura", "Maninagar"]),
        ("Surat", "Gujarat", ["Adajan", "Vesu", "Athwa"]),
        ("Nagpur", "Maharashtra", ["Sitabuldi", "Dharampeth", "Manish Nagar"]),
        ("Panaji", "Goa", ["Campal", "Porvorim", "Miramar"]),
        ("Indore", "Madhya Pradesh", ["Vijay Nagar", "Palasia", "Rajwada"]),
    ],
}
CHAINS = ["PVR", "INOX", "Cinepolis", "Miraj", "Carnival", "Movietime", "Mukta A2"]
MOVIES = [
    ("monsoon-express", "Monsoon Express", "Hindi", 148, "UA"),
    ("the-last-raga", "The Last Raga", "Hindi", 132, "U"),
    ("kaveri-nights", "Kaveri Nights", "Kannada", 141, "UA"),
    ("deccan-thunder", "Deccan Thunder", "Telugu", 165, "A"),
    ("silent-ghats", "Silent Ghats", "Tamil", 127, "UA"),
    ("operation-konkan", "Operation Konkan", "Marathi", 139, "UA"),
    ("chai-and-chaos", "Chai & Chaos", "Hindi", 118, "U"),
    ("backwaters", "Backwaters", "Malayalam", 124, "U"),
]
SHOW_TIMES = [time(10, 0), time(13, 30), time(17, 0), time(20, 30), time(23, 0)]
# category -> base price in rupees; back rows cost more.
CATEGORIES = [("CLASSIC", 180), ("PRIME", 290), ("RECLINER", 560)]


@dataclass(frozen=True)
class CatalogSpec:
    theatres_per_city: int = 3
    cities_per_region: int = 7
    days: int = 3
    shows_per_day: int = 4
    seed: int = 2026
    # (rows, seats per row) for every screen, none blocked (e.g. the bench's 25 x 40 =
    # 1,000-seat shows); None: the demo's varied layouts of 100-300 seats.
    layout: tuple[int, int] | None = None


@dataclass(frozen=True)
class City:
    id: str
    name: str
    state: str
    region_hint: str  # where the demo expects it; routing still comes from the topology


@dataclass(frozen=True)
class Theatre:
    id: str
    city_id: str
    name: str
    address: str
    timezone: str = DEFAULT_ZONE  # IANA name; its shows' times on tickets and mails

    def __post_init__(self) -> None:
        try:
            zone(self.timezone)
        except UnknownTimeZone as exc:
            raise UnknownTimeZone(self.timezone, f"theatre {self.id!r}") from exc


@dataclass(frozen=True)
class Screen:
    id: str
    theatre_id: str
    name: str
    focal_row: str | None = None  # the sweet spot's row (`seats/best.py`)


@dataclass(frozen=True)
class Seat:
    screen_id: str
    seat_id: str
    row_label: str
    number: int
    category: str
    price_paise: int
    blocked: bool
    position: int = 0  # across the row, aisles being gaps; 0: the seat's number
    accessible: bool = False


@dataclass(frozen=True)
class Movie:
    id: str
    title: str
    language: str
    duration_min: int
    certificate: str


@dataclass(frozen=True)
class Show:
    id: int
    screen_id: str
    movie_id: str
    starts_at: datetime


@dataclass(frozen=True)
class Catalog:
    cities: list[City]
    theatres: list[Theatre]
    screens: list[Screen]
    seats: list[Seat]
    movies: list[Movie]
    shows: list[Show]

    def theatre_of_screen(self) -> dict[str, str]:
        return {s.id: s.theatre_id for s in self.screens}


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def row_label(index: int) -> str:
    letters = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # no I or O: they read as 1 and 0
    return letters[index] if index < len(letters) else letters[index // len(letters) - 1] + \
        letters[index % len(letters)]


def aisles(per_row: int) -> tuple[int, ...]:
    """The seat numbers an aisle follows: two aisles a quarter in from each side of a row
    of 12 or more (a 40-seat row: 10 | 20 | 10), none in a shorter row."""
    if per_row < 12:
        return ()
    side = per_row // 4
    return side, per_row - side


def position(number: int, per_row: int) -> int:
    """Where seat `number` sits across its row: its number, plus one per aisle before it."""
    return number + sum(1 for after in aisles(per_row) if number > after)


def sweet_spot(rows: int) -> str:
    """The demo's sweet-spot row: two thirds of the way back (as `best.default_focal_row`)."""
    return row_label((2 * (rows - 1) + 1) // 3)


def _layout(rng: random.Random, screen_id: str, price_factor: float,
            fixed: tuple[int, int] | None = None) -> list[Seat]:
    if fixed is not None:
        rows, per_row = fixed
    else:
        while True:
            rows, per_row = rng.randint(8, 16), rng.randint(12, 20)
            if 100 <= rows * per_row <= 300:
                break
    recliner_rows = 2 if rows >= 10 else 1
    classic_rows = rows // 3
    seats = []
    for r in range(rows):
        label = row_label(r)
        if r < classic_rows:
            category, base = CATEGORIES[0]
        elif r >= rows - recliner_rows:
            category, base = CATEGORIES[2]
        else:
            category, base = CATEGORIES[1]
        price = int(round(base * price_factor / 10.0) * 10 * 100)
        for n in range(1, per_row + 1):
            blocked = fixed is None and rng.random() < 0.01  # the odd broken seat
            # Wheelchair spaces: the two seats at each end of the front row.
            accessible = r == 0 and (n <= 2 or n > per_row - 2)
            seats.append(Seat(screen_id, f"{label}{n}", label, n, category, price, blocked,
                              position(n, per_row), accessible))
    return seats


def build_catalog(spec: CatalogSpec, start: date) -> Catalog:
    rng = random.Random(spec.seed)
    cities, theatres, screens, seats, shows = [], [], [], [], []
    movies = [Movie(*m) for m in MOVIES]
    show_id = 1000
    for region in sorted(CITIES):
        for city_name, state, localities in CITIES[region][: spec.cities_per_region]:
            city = City(slug(city_name), city_name, state, region)
            cities.append(city)
            for n in range(1, spec.theatres_per_city + 1):
                locality = localities[(n - 1) % len(localities)]
                chain = CHAINS[rng.randrange(len(CHAINS))]
                theatre = Theatre(f"{city.id}-{n:02d}", city.id, f"{chain} {locality}",
                                  f"{locality}, {city_name}, {state}")
                theatres.append(theatre)
                price_factor = rng.choice([0.9, 1.0, 1.15, 1.3])
                for s in range(1, rng.randint(2, 4) + 1):
                    screen_id = f"{theatre.id}-s{s}"
                    layout = _layout(rng, screen_id, price_factor, spec.layout)
                    rows = len({seat.row_label for seat in layout})
                    screen = Screen(screen_id, theatre.id, f"Audi {s}", sweet_spot(rows))
                    screens.append(screen)
                    seats.extend(layout)
                    for day in range(spec.days):
                        for slot in SHOW_TIMES[: spec.shows_per_day]:
                            # The theatre's wall clock (its zone's offset on that day).
                            starts = datetime.combine(start + timedelta(days=day), slot,
                                                      zone(theatre.timezone))
                            movie = movies[rng.randrange(len(movies))]
                            show_id += 1
                            shows.append(Show(show_id, screen.id, movie.id, starts))
    return Catalog(cities, theatres, screens, seats, movies, shows)
