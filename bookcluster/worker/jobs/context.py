"""What a job handler gets: the region's connections and services, owned by the worker."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bookcluster.booking.holds import BookingService
from bookcluster.catalog import Catalog
from bookcluster.seats.home import HomeRegion
from bookcluster.topology.model import Payments, Topology


@dataclass(frozen=True)
class JobContext:
    topology: Topology
    region: str
    catalog: Catalog
    bookings: BookingService
    http: aiohttp.ClientSession  # for the payment gateway

    @property
    def home(self) -> HomeRegion:
        return self.bookings.home

    @property
    def run_dir(self) -> Path:
        return self.topology.settings.run_dir

    @property
    def payments(self) -> Payments:
        if self.topology.payments is None:
            raise RuntimeError("topology has no payments section")
        return self.topology.payments
