"""Client of the payment gateway's merchant API (the simulator locally).

Nodes create payment intents (`pay`) and verify captures (`confirm`); workers
ask for refunds. Every call carries the merchant's API key. Calls are short:
a gateway that does not answer in time is a 503, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from bookcluster.errors import NodeError
from bookcluster.topology.model import Topology

TIMEOUT_S = 0.8


# A hosted checkout sends the customer back here, with this replaced by the payment's id.
PAYMENT_ID_PLACEHOLDER = "{PAYMENT_ID}"
MAX_RETURN_URL = 2000


def return_url_allowed(url: str, topology: Topology) -> bool:
    """Whether a hosted checkout may send the customer to `url`: a page of one of the
    topology's nodes (as a real gateway allows only its merchant's registered URLs),
    so the checkout cannot be made an open redirect."""
    nodes = {str(ep) for region in topology.regions.values() for ep in region.nodes}
    parts = urlsplit(url)
    return len(url) <= MAX_RETURN_URL and parts.scheme == "http" and parts.netloc in nodes


class GatewayUnavailable(NodeError):
    status = 503
    code = "payment_gateway_unavailable"


@dataclass(frozen=True)
class Intent:
    payment_id: str
    booking_id: str
    amount_paise: int
    status: str  # PENDING | CAPTURED | FAILED | REFUNDED

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Intent:
        return cls(str(body["id"]), str(body["booking_id"]), int(body["amount_paise"]),
                   str(body["status"]))


class GatewayClient:
    """Owns an HTTP session to the gateway, or borrows one (`session=`)."""

    def __init__(self, topology: Topology, session: aiohttp.ClientSession | None = None) -> None:
        if topology.payments is None:
            raise RuntimeError("topology has no payments section")
        gateway = topology.payments.gateway
        self.base = f"http://{gateway.host}:{gateway.port}"
        self._headers = {"Authorization": f"Bearer {topology.secrets.get('gateway_api_key')}"}
        self._session = session
        self._owned = session is None

    async def open(self) -> GatewayClient:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=TIMEOUT_S))
        return self

    async def close(self) -> None:
        if self._owned and self._session is not None:
            await self._session.close()
            self._session = None

    def checkout_url(self, payment_id: str) -> str:
        return f"{self.base}/checkout/{payment_id}"

    async def create(self, booking_id: str, amount_paise: int, region: str,
                     return_url: str | None = None) -> Intent:
        """An intent; with `return_url`, a hosted checkout the customer settles."""
        body: dict[str, Any] = {"booking_id": booking_id, "amount_paise": amount_paise,
                                "region": region}
        if return_url is not None:
            body["return_url"] = return_url
        status, answer = await self._call("POST", "/intents", body)
        if status != 201:
            raise GatewayUnavailable(f"the gateway refused the payment intent ({status})")
        return Intent.from_json(answer)

    async def intent(self, payment_id: str) -> Intent | None:
        """The intent as the gateway knows it, or None if it never issued that id."""
        status, answer = await self._call("GET", f"/intents/{payment_id}")
        if status == 404:
            return None
        if status != 200:
            raise GatewayUnavailable(f"the gateway answered {status}")
        return Intent.from_json(answer)

    async def refund(self, payment_id: str, amount_paise: int) -> None:
        status, answer = await self._call("POST", "/refunds", {"payment_id": payment_id,
                                                               "amount_paise": amount_paise})
        if status != 200:
            raise GatewayUnavailable(f"the gateway refused the refund ({status}): {answer}")

    async def _call(self, method: str, path: str,
                    body: dict[str, Any] | None = None) -> tuple[int, Any]:
        assert self._session is not None, "GatewayClient not opened"
        try:
            async with self._session.request(method, self.base + path, json=body,
                                             headers=self._headers,
                                             timeout=aiohttp.ClientTimeout(total=TIMEOUT_S)
                                             ) as resp:
                return resp.status, await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise GatewayUnavailable(f"payment gateway unreachable ({type(exc).__name__})") \
                from exc
