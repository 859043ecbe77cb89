-- Failure messages by channel, event date and metric, ranked within each channel and day.
-- failures counts events (for push, one per device whose recipient entry carries a message);
-- deliveries counts the distinct messages they belong to.
WITH failures AS (
    SELECT
        object_type AS channel,
        event_date,
        metric,
        failure_message,
        delivery_id
    FROM customerio_events
    WHERE failure_message IS NOT NULL
    UNION ALL
    -- Push reports each device's failure inside recipients instead.
    SELECT
        'push' AS channel,
        e.event_date,
        e.metric,
        r.failure_message,
        e.delivery_id
    FROM push_events AS e, UNNEST(e.recipients) AS u(r)
    WHERE r.failure_message IS NOT NULL AND e.failure_message IS NULL
),
counted AS (
    SELECT
        channel,
        event_date,
        metric,
        failure_message,
        count(*) AS failures,
        count(DISTINCT delivery_id) AS deliveries
    FROM failures
    GROUP BY channel, event_date, metric, failure_message
)
SELECT
    channel,
    event_date,
    metric,
    failure_message,
    failures,
    deliveries,
    row_number() OVER (
        PARTITION BY channel, event_date
        ORDER BY failures DESC, deliveries DESC, metric, failure_message
    ) AS rank_in_day
FROM counted
