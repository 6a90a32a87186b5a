"""The ledger's typed answers match what the SQL functions say."""

from __future__ import annotations

import re

import asyncpg
import pytest

from bookcluster.booking import ledger
from bookcluster.db.migrate import FUNCTIONS_DIR

SQL = "\n".join(p.read_text() for p in sorted(FUNCTIONS_DIR.glob("*.sql")))


def raised(message: str, detail: str | None = None) -> asyncpg.RaiseError:
    fields = {"C": "P0001", "M": message}
    if detail is not None:
        fields["D"] = detail
    exc = asyncpg.exceptions.RaiseError.new(fields)
    assert isinstance(exc, asyncpg.RaiseError)
    return exc


@pytest.mark.parametrize("reason", list(ledger.Reason))
def test_each_reason_is_raised_by_a_function_and_maps_back(reason: ledger.Reason) -> None:
    assert re.search(rf"RAISE EXCEPTION '{reason.value}'", SQL), reason
    undone = ledger._undone(raised(reason.value, "36000"))
    assert undone is not None and undone.reason is reason and undone.detail == "36000"


def test_other_raises_pass_through() -> None:
    # bc_own's refusals belong to the store's error table, not to the ledger.
    assert ledger._undone(raised("bc_moved", "south 3")) is None
    assert ledger._undone(raised("bc_theatre_moving", "west")) is None


@pytest.mark.parametrize("outcome", list(ledger.Outcome))
def test_each_outcome_is_one_the_sale_functions_answer(outcome: ledger.Outcome) -> None:
    assert re.search(rf"outcome := '{outcome.value}'", SQL), outcome


@pytest.mark.parametrize("outcome", list(ledger.RefundOutcome))
def test_each_refund_outcome_is_one_bc_refund_answers(outcome: ledger.RefundOutcome) -> None:
    refunds = (FUNCTIONS_DIR / "refunds.sql").read_text()
    assert re.search(rf"outcome := '{outcome.value}'", refunds), outcome


def test_every_outcome_the_sale_functions_answer_is_known() -> None:
    answered = set(re.findall(r"outcome := '(\w+)'", SQL))
    assert answered <= {o.value for o in (*ledger.Outcome, *ledger.RefundOutcome)}
