-- The latest subscription state of each customer. subscribed is the latest subscribed or
-- unsubscribed change (NULL when the customer only changed preferences); preferences is the
-- content of the latest preference change. Latest means greatest event_time, ties broken by the
-- greater event_id (ULIDs grow with time), so arrival order never matters.
WITH statuses AS (
    SELECT
        customer_key,
        change,
        level,
        event_time,
        event_id,
        row_number() OVER (
            PARTITION BY customer_key ORDER BY event_time DESC, event_id DESC
        ) AS recency
    FROM subscription_changes
    WHERE change IN ('subscribed', 'unsubscribed') AND customer_key IS NOT NULL
),
preference_changes AS (
    SELECT
        customer_key,
        preferences,
        event_time,
        row_number() OVER (
            PARTITION BY customer_key ORDER BY event_time DESC, event_id DESC
        ) AS recency
    FROM subscription_changes
    WHERE change = 'preferences_changed' AND customer_key IS NOT NULL
),
customers AS (
    SELECT
        customer_key,
        max(identifier_email) AS identifier_email,
        count(*) AS changes,
        max(event_time) AS last_change_at
    FROM subscription_changes
    WHERE customer_key IS NOT NULL
    GROUP BY customer_key
)
SELECT
    c.customer_key,
    c.identifier_email,
    s.change = 'subscribed' AS subscribed,
    s.event_time AS subscription_changed_at,
    s.level AS subscription_change_level,
    s.event_id AS subscription_event_id,
    p.preferences,
    p.event_time AS preferences_changed_at,
    c.changes,
    c.last_change_at
FROM customers AS c
LEFT JOIN statuses AS s ON s.customer_key = c.customer_key AND s.recency = 1
LEFT JOIN preference_changes AS p ON p.customer_key = c.customer_key AND p.recency = 1
