"""send-test: schema choice, pacing, and real posts to a running receiver."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from ciolake.customerio.sender import (
    MAX_COUNT,
    ReceiverRefusedError,
    ReceiverUnreachableError,
    SendSummary,
    build_bodies,
    check_accepted,
    choose_schemas,
    iter_bodies,
    post_signed,
)
from ciolake.events.decode import Typed, decode_event
from tests.support import TEST_KEY, running_server, table_rows, wait_until_committed


def test_choose_schemas() -> None:
    assert len(choose_schemas(object_type=None, metric=None, every=True)) == 69
    assert [s.name for s, _t in choose_schemas(object_type=None, metric=None, every=False)] == [
        "email_opened"
    ]
    sms = choose_schemas(object_type="sms", metric=None, every=False)
    assert {t for _s, t in sms} == {"sms"}
    assert len(sms) == 10
    ((schema, object_type),) = choose_schemas(object_type="push", metric="drafted", every=False)
    assert (schema.name, object_type) == ("push_drafted", "push")
    with pytest.raises(ValueError, match="no sms event with metric 'opened'"):
        choose_schemas(object_type="sms", metric="opened", every=False)
    with pytest.raises(ValueError, match="unknown object type"):
        choose_schemas(object_type="fax", metric=None, every=False)


def test_all_with_a_metric_or_type_sends_every_matching_schema() -> None:
    opened = choose_schemas(object_type=None, metric="opened", every=True)
    sms = choose_schemas(object_type="sms", metric=None, every=True)
    customer = choose_schemas(object_type="customer", metric=None, every=False)

    assert [(s.name, t) for s, t in opened] == [
        ("email_opened", "email"),
        ("push_opened", "push"),
        ("in_app_opened", "in_app"),
        ("whatsapp_opened", "whatsapp"),
    ]
    assert sms == choose_schemas(object_type="sms", metric=None, every=False)
    assert {t for _s, t in customer} == {"customer"}
    assert len(customer) == 3
    with pytest.raises(ValueError, match="no event with metric 'openned'"):
        choose_schemas(object_type=None, metric="openned", every=True)


def test_bodies_are_built_lazily() -> None:
    schemas = choose_schemas(object_type=None, metric=None, every=False)
    bodies = iter_bodies(schemas, count=MAX_COUNT, rng=random.Random(3), now=1_790_000_000)

    first = next(bodies)

    assert isinstance(bodies, Iterator)  # a list of a million bodies would take minutes
    assert isinstance(decode_event(first), Typed)


def test_bodies_are_valid_unique_and_cover_the_choice() -> None:
    schemas = choose_schemas(object_type=None, metric=None, every=True)
    bodies = build_bodies(schemas, count=138, rng=random.Random(1), now=1_790_000_000)
    decoded = [decode_event(b) for b in bodies]
    assert all(isinstance(d, Typed) and d.spec_violations == [] for d in decoded)
    assert len({d.event.event_id for d in decoded if isinstance(d, Typed)}) == 138
    assert {d.schema for d in decoded if isinstance(d, Typed)} == {s.name for s, _t in schemas}


def test_posts_are_signed_paced_and_land(tmp_path: Path) -> None:
    schemas = choose_schemas(object_type="sms", metric="delivered", every=False)
    bodies = build_bodies(schemas, count=6, rng=random.Random(2), now=1_790_000_000)
    with running_server(tmp_path / "data") as server:
        summary = post_signed(server.url, bodies, key=TEST_KEY, rate=20.0)
        wrong = post_signed(server.url, bodies[:2], key="not-the-key")
        wait_until_committed(server)
    assert summary.ok
    assert summary.statuses == {"200": 6}
    assert dict(wrong.statuses) == {"401": 2}
    assert not wrong.ok
    # At 20/s the sixth post may not start before 250 ms (a lower bound: load only adds).
    assert summary.seconds >= 0.25
    rows = table_rows(tmp_path / "data", "sms_events", "metric")
    assert [r["metric"] for r in rows] == ["delivered"] * 6


def test_unreachable_receiver_stops_the_run_naming_the_url() -> None:
    # Every later post would fail the same way: the first failure ends the run.
    url = "http://127.0.0.1:9/webhooks/customerio"

    with pytest.raises(ReceiverUnreachableError) as caught:
        post_signed(url, iter([b"{}"] * MAX_COUNT), key=TEST_KEY)

    assert f"cannot connect to {url} (connection refused)" in str(caught.value)


def test_refused_answers_are_an_error_with_a_hint() -> None:
    url = "http://127.0.0.1:8080/webhooks/customerio"
    accepted = SendSummary(statuses=Counter({"200": 3}))
    refused = SendSummary(statuses=Counter({"200": 1, "401": 2}))

    check_accepted(accepted, url)
    with pytest.raises(ReceiverRefusedError) as caught:
        check_accepted(refused, url)

    assert str(caught.value) == (
        f"2 of 3 events to {url} were not accepted (2 answered 401): "
        "sign with one of the receiver's CIOLAKE_SIGNING_KEYS (--key)"
    )
