"""Decoding, routing and spec checks for all 69 schemas, the spec's examples and its quirks."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ciolake.events import ALL_SCHEMAS, Quarantined, Typed, decode_event
from ciolake.events.model import EmailData, PushData
from ciolake.events.samples import sample_event, schema_by_name, schema_keys

EXAMPLES = json.loads((Path(__file__).parents[1] / "data" / "example-payloads.json").read_text())
NOW = 1_790_000_000


def encode(event: dict[str, Any]) -> bytes:
    return json.dumps(event).encode()


def decoded_typed(event: dict[str, Any]) -> Typed:
    result = decode_event(encode(event))
    assert isinstance(result, Typed), result
    return result


def expected_table(object_type: str, metric: str, data: dict[str, Any]) -> str:
    if metric in ("subscribed", "cio_subscription_preferences_changed"):
        return "customer_events"
    if metric == "unsubscribed" and "delivery_id" not in data:
        return "customer_events"
    return f"{object_type}_events"


def test_the_matrix_has_69_schemas_over_8_object_types() -> None:
    assert len(ALL_SCHEMAS) == 69
    object_types = set().union(*(s.object_types for s in ALL_SCHEMAS))
    assert object_types == {
        "customer",
        "email",
        "push",
        "in_app",
        "sms",
        "slack",
        "webhook",
        "whatsapp",
    }
    assert len({(frozenset(s.object_types), s.metric) for s in ALL_SCHEMAS}) == 69


@pytest.mark.parametrize(("name", "object_type", "metric"), schema_keys())
def test_every_schema_decodes_routes_and_checks(name: str, object_type: str, metric: str) -> None:
    schema = schema_by_name(name)
    event = sample_event(schema, rng=random.Random(name), timestamp=NOW)
    typed = decoded_typed(event)
    assert typed.schema == name
    assert typed.object_type == object_type
    assert typed.event.metric == metric
    assert typed.event.event_id == event["event_id"]
    assert typed.table == expected_table(object_type, metric, event["data"])
    assert typed.spec_violations == []
    for field in schema.required:
        value = getattr(typed.event.data, field)  # type: ignore[attr-defined]
        assert value is not None, field
    for field in schema.required:
        broken = json.loads(json.dumps(event))
        del broken["data"][field]
        problems = decoded_typed(broken).spec_violations
        assert f"missing_field:data.{field}" in problems, (name, field)


@pytest.mark.parametrize(
    ("group", "key"),
    [(g, k) for g in ("spec_examples", "rudder_transformer_test_inputs") for k in EXAMPLES[g]],
)
def test_example_payloads_land(group: str, key: str) -> None:
    event = EXAMPLES[group][key]
    typed = decoded_typed(event)
    assert typed.event.event_id == event["event_id"]
    assert typed.table == expected_table(event["object_type"], event["metric"], event["data"])
    assert typed.schema is not None


def test_spec_examples_fail_the_spec_oneof_yet_land_as_broadcasts() -> None:
    # The spec's own email_sent/sms_sent examples are broadcasts without trigger_id.
    for key in ("email_sent", "sms_sent"):
        typed = decoded_typed(EXAMPLES["spec_examples"][key])
        assert typed.origin == "broadcast"
        assert not [v for v in typed.spec_violations if "trigger_id" in v]


def test_push_drafted_is_recognised_despite_the_spec_enum() -> None:
    event: dict[str, Any] = {
        "event_id": "E1",
        "object_type": "push",
        "metric": "drafted",
        "timestamp": NOW,
        "data": {"delivery_id": "D", "campaign_id": 1, "action_id": 2, "identifiers": {"id": "1"}},
    }
    typed = decoded_typed(event)
    assert typed.schema == "push_drafted"
    assert typed.spec_violations == []
    assert (
        decoded_typed(
            {**event, "metric": "attempted", "data": {**event["data"], "failure_message": "x"}}
        ).schema
        == "push_attempted"
    )


def test_unsubscribed_routes_by_delivery_id() -> None:
    person = EXAMPLES["rudder_transformer_test_inputs"]["customer_unsubscribed"]
    email_level = {**person, "object_type": "email"}
    assert decoded_typed(email_level).table == "customer_events"
    assert decoded_typed(email_level).schema == "person_unsubscribed"
    message_level = {
        **email_level,
        "data": {
            **person["data"],
            "delivery_id": "RD1",
            "campaign_id": 3,
            "action_id": 4,
            "recipient": "a@example.com",
            "subject": "Hi",
        },
    }
    typed = decoded_typed(message_level)
    assert typed.table == "email_events"
    assert typed.schema == "email_unsubscribed"
    assert typed.spec_violations == []


@pytest.mark.parametrize("object_type", ["email", "sms", "push", "whatsapp", "customer"])
def test_customer_family_metrics_go_to_customer_events(object_type: str) -> None:
    for metric in ("subscribed", "cio_subscription_preferences_changed"):
        event = {
            "event_id": "E",
            "object_type": object_type,
            "metric": metric,
            "timestamp": NOW,
            "data": {
                "customer_id": "1",
                "email_address": "a@b.c",
                "identifiers": {"id": "1"},
                "delivery_id": "RD",
            },
        }
        assert decoded_typed(event).table == "customer_events"


def test_preferences_changed_with_object_type_type_discriminator() -> None:
    event = {
        "event_id": "E",
        "object_type_type": "email",
        "metric": "cio_subscription_preferences_changed",
        "timestamp": NOW,
        "data": {
            "customer_id": "1",
            "email_address": "a@b.c",
            "identifiers": {"id": "1"},
            "content": '{"topics":{"topic_1":true}}',
        },
    }
    typed = decoded_typed(event)
    assert typed.object_type == "email"
    assert typed.table == "customer_events"
    assert typed.schema == "person_cio_subscription_preferences_changed"
    assert "renamed_field:object_type_type" in typed.spec_violations


def test_push_recipients_and_newer_fields_are_typed() -> None:
    event = EXAMPLES["rudder_transformer_test_inputs"]["push_sent_broadcast"]
    newer = {
        **event["data"],
        "app_id": "app-7",
        "related_delivery_ids": ["RA", "RB"],
        "template_id": 12,
        "broadcast_name": "Spring",
        "broadcast_tags": ["promo"],
        "identifiers": {"id": "1", "phone": "+15550001111"},
    }
    typed = decoded_typed({**event, "data": newer})
    data = typed.event.data  # type: ignore[attr-defined]
    assert isinstance(data, PushData)
    assert data.recipients is not None
    assert data.recipients[0].device_platform == "android"
    assert (data.app_id, data.related_delivery_ids, data.template_id) == ("app-7", ["RA", "RB"], 12)
    assert (data.broadcast_name, data.broadcast_tags) == ("Spring", ["promo"])
    assert data.identifiers is not None
    assert data.identifiers.phone == "+15550001111"
    assert typed.spec_violations == []


def test_decoded_events_are_not_tracked_by_the_cycle_collector() -> None:
    # Tracked, every collection walks each event a batch holds (replay decoded 2x slower).
    typed = decoded_typed(EXAMPLES["rudder_transformer_test_inputs"]["push_sent_broadcast"])
    data = typed.event.data  # type: ignore[attr-defined]
    assert data.recipients
    structs = [typed, typed.event, data, data.identifiers, data.recipients[0]]
    assert [gc.is_tracked(s) for s in structs if s is not None] == [False] * 5
    quarantined = decode_event(b"{")
    assert isinstance(quarantined, Quarantined)
    assert not gc.is_tracked(quarantined)


def test_machine_open_and_click_flags() -> None:
    opened: dict[str, Any] = {
        "event_id": "E",
        "object_type": "email",
        "metric": "opened",
        "timestamp": NOW,
        "data": {
            "delivery_id": "D",
            "recipient": "a@b.c",
            "proxied": True,
            "prefetched": False,
            "synthetic": True,
            "identifiers": {"id": "1"},
        },
    }
    data = decoded_typed(opened).event.data  # type: ignore[attr-defined]
    assert isinstance(data, EmailData)
    assert (data.proxied, data.prefetched, data.synthetic) == (True, False, True)
    clicked = {
        **opened,
        "metric": "clicked",
        "data": {**opened["data"], "machine": True, "href": "h", "link_id": 1, "subject": "s"},
    }
    assert decoded_typed(clicked).event.data.machine is True  # type: ignore[attr-defined]


def test_unknown_fields_are_ignored_by_the_struct_and_do_not_matter() -> None:
    event = {**EXAMPLES["spec_examples"]["sms_sent"], "brand_new_top_level": {"x": 1}}
    event["data"] = {**event["data"], "brand_new_field": [1, 2]}
    typed = decoded_typed(event)
    assert typed.spec_violations == []


def test_unknown_metric_lands_with_a_violation() -> None:
    event = {**EXAMPLES["spec_examples"]["sms_sent"], "metric": "teleported"}
    typed = decoded_typed(event)
    assert typed.table == "sms_events"
    assert typed.schema is None
    assert typed.spec_violations == ["unknown_metric:teleported"]


def test_wrong_field_types_are_dropped_and_listed_not_rejected() -> None:
    event = EXAMPLES["rudder_transformer_test_inputs"]["email_clicked_broadcast"]
    broken = {**event, "data": {**event["data"], "link_id": {"nested": True}, "broadcast_id": "9"}}
    typed = decoded_typed(broken)
    data = typed.event.data  # type: ignore[attr-defined]
    assert data.link_id is None
    assert data.broadcast_id == 9  # a numeric string is read as the number it spells
    assert "wrong_type:data.link_id" in typed.spec_violations


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"", "invalid_json"),
        (b"not json", "invalid_json"),
        (b"\xff\xfe{}", "invalid_json"),
        (b'{"event_id": "E",', "invalid_json"),
        (b"[1, 2]", "invalid_envelope"),
        (b'"text"', "invalid_envelope"),
        (b"{}", "invalid_envelope"),
        (
            b'{"event_id":"","object_type":"email","metric":"sent","timestamp":1,"data":{}}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"email","metric":"sent","timestamp":"soon","data":{}}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"email","metric":"sent","timestamp":-1,"data":{}}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"email","metric":"sent","timestamp":1e30,"data":{}}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"email","metric":"sent","timestamp":1,"data":[]}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"email","metric":7,"timestamp":1,"data":{}}',
            "invalid_envelope",
        ),
        (
            b'{"event_id":"E","object_type":"fax","metric":"sent","timestamp":1,"data":{}}',
            "unknown_object_type",
        ),
        (
            b'{"event_id":"E","object_type":null,"metric":"sent","timestamp":1,"data":{}}',
            "invalid_envelope",
        ),
    ],
)
def test_undecodable_bodies_are_quarantined_with_a_reason(body: bytes, reason: str) -> None:
    result = decode_event(body)
    assert isinstance(result, Quarantined)
    assert result.reason == reason
    assert result.detail


def test_quarantine_keeps_what_it_could_read() -> None:
    result = decode_event(
        b'{"event_id":"E9","object_type":"fax","metric":"sent","timestamp":1,"data":{}}'
    )
    assert isinstance(result, Quarantined)
    assert (result.event_id, result.object_type, result.metric) == ("E9", "fax", "sent")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=5)
    ),
    max_leaves=25,
)
envelope_like = st.fixed_dictionaries(
    {
        "event_id": st.text(max_size=30) | st.integers(),
        "object_type": st.sampled_from(
            ["email", "push", "sms", "customer", "in_app", "slack", "webhook", "whatsapp", "x"]
        ),
        "metric": st.sampled_from([s.metric for s in ALL_SCHEMAS]) | st.text(max_size=10),
        "timestamp": st.integers(min_value=-(2**70), max_value=2**70) | st.floats(),
        "data": st.dictionaries(
            st.sampled_from(
                [
                    "delivery_id",
                    "campaign_id",
                    "recipients",
                    "identifiers",
                    "headers",
                    "link_id",
                    "recipient",
                ]
            )
            | st.text(max_size=8),
            json_values,
            max_size=6,
        ),
    }
)


@given(document=json_values | envelope_like)
def test_arbitrary_json_never_crashes_the_decoder(document: Any) -> None:
    result = decode_event(json.dumps(document).encode())
    assert isinstance(result, Typed | Quarantined)


@given(body=st.binary(max_size=300))
def test_arbitrary_bytes_never_crash_the_decoder(body: bytes) -> None:
    assert isinstance(decode_event(body), Typed | Quarantined)
