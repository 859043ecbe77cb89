-- The receiver per hour of receipt (UTC): deliveries received (raw_events, duplicates
-- included), events landed (first deliveries, one per event_id), duplicates (received minus
-- landed minus quarantined), quarantined by reason, and the lag from event time to receipt of
-- the landed events in seconds.
WITH received AS (
    SELECT
        date_trunc('hour', received_at) AS hour,
        count(*) AS deliveries_received
    FROM raw_events
    GROUP BY date_trunc('hour', received_at)
),
landed_events AS (
    SELECT
        date_trunc('hour', received_at) AS hour,
        CAST(date_diff('microsecond', event_time, received_at) AS DOUBLE) / 1000000 AS lag_s
    FROM customerio_events
),
landed AS (
    SELECT
        hour,
        count(*) AS events_landed,
        quantile_cont(lag_s, 0.5) AS lag_p50_s,
        quantile_cont(lag_s, 0.99) AS lag_p99_s,
        max(lag_s) AS lag_max_s
    FROM landed_events
    GROUP BY hour
),
quarantined AS (
    SELECT
        date_trunc('hour', received_at) AS hour,
        count(*) AS quarantined,
        sum(CASE WHEN reason = 'invalid_json' THEN 1 ELSE 0 END) AS quarantined_invalid_json,
        sum(CASE WHEN reason = 'invalid_envelope' THEN 1 ELSE 0 END)
            AS quarantined_invalid_envelope,
        sum(CASE WHEN reason = 'unknown_object_type' THEN 1 ELSE 0 END)
            AS quarantined_unknown_object_type,
        sum(CASE WHEN reason = 'stale_timestamp' THEN 1 ELSE 0 END)
            AS quarantined_stale_timestamp,
        sum(
            CASE
                WHEN reason IN (
                    'invalid_json', 'invalid_envelope', 'unknown_object_type', 'stale_timestamp'
                ) THEN 0
                ELSE 1
            END
        ) AS quarantined_other
    FROM quarantine
    GROUP BY date_trunc('hour', received_at)
)
SELECT
    r.hour,
    r.deliveries_received,
    coalesce(l.events_landed, 0) AS events_landed,
    r.deliveries_received - coalesce(l.events_landed, 0) - coalesce(q.quarantined, 0)
        AS duplicates,
    coalesce(q.quarantined, 0) AS quarantined,
    coalesce(q.quarantined_invalid_json, 0) AS quarantined_invalid_json,
    coalesce(q.quarantined_invalid_envelope, 0) AS quarantined_invalid_envelope,
    coalesce(q.quarantined_unknown_object_type, 0) AS quarantined_unknown_object_type,
    coalesce(q.quarantined_stale_timestamp, 0) AS quarantined_stale_timestamp,
    coalesce(q.quarantined_other, 0) AS quarantined_other,
    l.lag_p50_s,
    l.lag_p99_s,
    l.lag_max_s
FROM received AS r
LEFT JOIN landed AS l ON l.hour = r.hour
LEFT JOIN quarantined AS q ON q.hour = r.hour
