"""The App API event catalog: derived from the payload spec, checked against the API's enum."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciolake.customerio.events_catalog import (
    ALL,
    CHANNELS,
    CUSTOMER_EVENTS,
    CUSTOMER_GROUP,
    EVENT_NAMES,
    GROUPS,
    UnknownEventError,
    expand_events,
    summarize_events,
)
from ciolake.errors import TerminalError
from ciolake.events.schemas import ALL_SCHEMAS
from tests.customerio.fake_app_api import APP_API_EVENT_ENUM


def test_catalog_is_exactly_the_app_api_enum() -> None:
    assert EVENT_NAMES == APP_API_EVENT_ENUM
    assert len(EVENT_NAMES) == 72


def test_every_channel_schema_is_subscribable_except_what_the_api_lacks() -> None:
    derived = {
        f"{next(iter(s.object_types))}_{s.metric}" for s in ALL_SCHEMAS if len(s.object_types) == 1
    }
    assert derived - EVENT_NAMES == {"slack_undeliverable"}
    assert EVENT_NAMES - derived - CUSTOMER_EVENTS == {
        "email_deferred",
        "sms_dropped",
        "slack_converted",
        "webhook_converted",
    }
    assert "push_drafted" in EVENT_NAMES  # the spec's enum says "attempted"; the name is right


def test_customer_family_uses_customer_prefix_not_cio() -> None:
    assert {
        "customer_subscribed",
        "customer_unsubscribed",
        "customer_subscription_preferences_changed",
    } == CUSTOMER_EVENTS
    assert not any(name.startswith("cio_") or "_cio_" in name for name in EVENT_NAMES)


def test_groups_partition_the_catalog() -> None:
    assert set(GROUPS) == {*CHANNELS, CUSTOMER_GROUP}
    members = [name for group in GROUPS.values() for name in group]
    assert len(members) == len(set(members)) == len(EVENT_NAMES)
    for channel in CHANNELS:
        assert GROUPS[channel]
        assert all(name.startswith(f"{channel}_") for name in GROUPS[channel])
    assert GROUPS["email"] >= {"email_opened", "email_deferred", "email_unsubscribed"}
    assert GROUPS["webhook"] >= {"webhook_converted", "webhook_undeliverable"}


def test_expand_all_groups_and_names() -> None:
    assert expand_events([ALL]) == sorted(EVENT_NAMES)
    assert expand_events(["sms"]) == sorted(GROUPS["sms"])
    assert expand_events(["email_opened", "customer"]) == sorted({"email_opened", *CUSTOMER_EVENTS})


def test_expand_splits_commas_collapses_duplicates_and_sorts() -> None:
    result = expand_events(["sms_sent, email_opened", "email_opened,,", " SMS_SENT "])
    assert result == ["email_opened", "sms_sent"]


def test_expand_nothing_is_empty() -> None:
    assert expand_events([]) == []
    assert expand_events([" , "]) == []


def test_unknown_names_are_all_named() -> None:
    with pytest.raises(UnknownEventError) as caught:
        expand_events(["email_openned,email_opened", "cio_subscription_preferences_changed", "x"])
    error = caught.value
    assert isinstance(error, TerminalError)
    assert error.unknown == ("cio_subscription_preferences_changed", "email_openned", "x")
    for name in error.unknown:
        assert repr(name) in str(error)
    assert "'email_opened'" not in str(error).split(";")[0]


def test_summarize_uses_all_and_whole_groups() -> None:
    assert summarize_events(EVENT_NAMES) == [ALL]
    assert summarize_events({*GROUPS["email"], "sms_sent"}) == ["email", "sms_sent"]
    assert summarize_events(GROUPS["email"] - {"email_sent"}) == sorted(
        GROUPS["email"] - {"email_sent"}
    )
    assert summarize_events({*EVENT_NAMES, "email_new_metric"}) == [ALL, "email_new_metric"]


@given(st.sets(st.sampled_from(sorted(EVENT_NAMES))))
def test_summary_expands_back_to_the_same_names(names: set[str]) -> None:
    assert expand_events(summarize_events(names)) == sorted(names)
