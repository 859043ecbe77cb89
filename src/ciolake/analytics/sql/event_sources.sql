-- Events per channel table and event date by where they come from: the webhook, or ciolake
-- backfill (Customer.io's delivery records of events the webhook never delivered). Every rate
-- counts deliveries, so rows of both sources mix without counting a delivery twice.
SELECT
    event_date,
    source_table,
    count(*) AS events,
    sum(CASE WHEN source = 'backfill' THEN 1 ELSE 0 END) AS backfilled,
    sum(CASE WHEN source IS NULL THEN 1 ELSE 0 END) AS from_webhook
FROM customerio_events
GROUP BY event_date, source_table
