-- One row per push delivery and device, from the recipients listed by each push event.
-- A device is delivered when an event reports it delivered, opened, clicked or converted, and
-- failed when an event gives it a failure message or reports it bounced or dropped.
WITH device_events AS (
    SELECT
        e.delivery_id,
        e.metric,
        e.event_time,
        r.device_id,
        r.device_platform,
        r.failure_message
    FROM push_events AS e, UNNEST(e.recipients) AS u(r)
    WHERE e.delivery_id IS NOT NULL AND r.device_id IS NOT NULL
),
per_device AS (
    SELECT
        delivery_id,
        device_id,
        max(device_platform) AS device_platform,
        min(CASE WHEN metric = 'sent' THEN event_time END) AS sent_at,
        min(CASE WHEN metric = 'delivered' THEN event_time END) AS delivered_at,
        min(CASE WHEN metric = 'opened' THEN event_time END) AS opened_at,
        min(CASE WHEN metric = 'clicked' THEN event_time END) AS clicked_at,
        min(CASE WHEN metric = 'converted' THEN event_time END) AS converted_at,
        min(CASE WHEN metric = 'bounced' THEN event_time END) AS bounced_at,
        min(CASE WHEN metric = 'dropped' THEN event_time END) AS dropped_at,
        max(failure_message) AS failure_message
    FROM device_events
    GROUP BY delivery_id, device_id
)
SELECT
    delivery_id,
    device_id,
    device_platform,
    sent_at,
    delivered_at IS NOT NULL
        OR opened_at IS NOT NULL
        OR clicked_at IS NOT NULL
        OR converted_at IS NOT NULL AS delivered,
    delivered_at,
    opened_at,
    clicked_at,
    converted_at,
    failure_message IS NOT NULL
        OR bounced_at IS NOT NULL
        OR dropped_at IS NOT NULL AS failed,
    bounced_at,
    dropped_at,
    failure_message
FROM per_device
