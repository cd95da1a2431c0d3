"""Keyset paging and counts, on every store: ``scan(newest_first=True, after=...)`` goes
on from the last saga of a page, by the index's order; ``counts()`` per status."""

from __future__ import annotations

import decimal
import uuid

import pytest
from store_sagas import Order, record_of

from sagaflow import SagaStatus
from sagaflow.stores import Store


def an_order() -> Order:
    return Order(order_id=uuid.uuid4(), amount=decimal.Decimal("1.00"))


def test_pages_follow_each_other_without_repeats_or_gaps(store: Store) -> None:
    for k in range(23):
        record = record_of(an_order(), f"p-{k:02d}")
        record.updated_at = 1000.0 + (k // 3)  # ties: the id orders them
        store.create(record)
    every = [s.saga_id for s in store.scan(newest_first=True)]
    pages: list[str] = []
    after = None
    while True:
        page = list(store.scan(newest_first=True, after=after, limit=5))
        pages += [s.saga_id for s in page]
        if len(page) < 5:
            break
        after = (page[-1].updated_at, page[-1].saga_id)
    assert pages == every and len(set(pages)) == 23
    with pytest.raises(ValueError, match="newest_first=True"):
        list(store.scan(after=(1.0, "x")))


def test_counts_per_status(store: Store) -> None:
    for k in range(4):
        store.create(record_of(an_order(), f"c-{k}"))
    count = getattr(store, "counts")  # noqa: B009  (the stores have it; the protocol does not)
    found = count()
    assert set(found) == {s.value for s in SagaStatus}
    assert sum(found.values()) == 4
