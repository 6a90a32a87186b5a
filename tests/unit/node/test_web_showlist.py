"""The booking page's list of a theatre's shows (`web/showlist.js`), run in Node: days
are the theatre's (IST), a movie's shows sit under it in time order, movies in the
order of their first show. Skips where no `node` is installed."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from bookcluster.node.views.pages import WEB_DIR

NODE = shutil.which("node")
GROUP = """
import { groupShows } from "./showlist.js";
const shows = JSON.parse(process.argv[1]).map(([id, at, movie]) =>
  ({ id, starts_at: at, movie: { id: movie, title: movie }, screen: { name: "Audi 1" } }));
console.log(JSON.stringify(groupShows(shows).map((d) =>
  [d.day, d.movies.map((m) => [m.movie.id, m.shows.map((s) => s.id)])])));
"""


def grouped(shows: list[tuple[int, str, str]]) -> object:
    assert NODE is not None
    done = subprocess.run([NODE, "--input-type=module", "-e", GROUP, json.dumps(shows)],
                          cwd=WEB_DIR, capture_output=True, text=True, timeout=30, check=True)
    return json.loads(done.stdout)


@pytest.mark.skipif(NODE is None, reason="no node on PATH to run the page's modules")
def test_shows_by_ist_day_then_movie() -> None:
    shows = [
        (1, "2026-12-07T18:30:00Z", "raga"),     # 00:00 IST on the 8th
        (2, "2026-12-07T04:30:00Z", "ghats"),    # 10:00 IST on the 7th
        (3, "2026-12-08T04:30:00Z", "ghats"),
        (4, "2026-12-07T11:30:00Z", "raga"),     # 17:00 IST on the 7th
        (5, "2026-12-07T08:00:00Z", "raga"),     # 13:30 IST on the 7th
        (6, "2026-12-07T15:00:00Z", "ghats"),    # 20:30 IST on the 7th
    ]
    assert grouped(shows) == [
        ["2026-12-07", [["ghats", [2, 6]], ["raga", [5, 4]]]],
        ["2026-12-08", [["raga", [1]], ["ghats", [3]]]],
    ]


@pytest.mark.skipif(NODE is None, reason="no node on PATH to run the page's modules")
def test_no_shows_no_days() -> None:
    assert grouped([]) == []
