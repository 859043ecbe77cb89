-- Events per object type, metric and event date, the columns of the usual reporting-webhook
-- guides. An EVENT-DATE view: each event counts on the day it happened, whatever message it
-- belongs to. Every event counts once (the channel tables hold one row per event_id).
SELECT
    object_type,
    metric,
    event_date,
    count(*) AS event_count,
    count(DISTINCT customer_key) AS unique_customers
FROM customerio_events
GROUP BY object_type, metric, event_date
