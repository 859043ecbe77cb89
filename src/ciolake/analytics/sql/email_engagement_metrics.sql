-- Email activity per event date, the columns of the usual reporting-webhook guides. An
-- EVENT-DATE view: "opened" on a day counts the messages opened that day, whenever they were
-- sent, so open_rate = opened / delivered compares different messages and can exceed 1.
-- Use email_cohort_metrics for rates. Each column counts distinct deliveries, not events.
SELECT
    event_date,
    sent,
    delivered,
    opened,
    clicked,
    CASE WHEN delivered = 0 THEN NULL ELSE CAST(opened AS DOUBLE) / delivered END AS open_rate,
    CASE WHEN delivered = 0 THEN NULL ELSE CAST(clicked AS DOUBLE) / delivered END AS click_rate
FROM (
    SELECT
        event_date,
        count(DISTINCT CASE WHEN metric = 'sent' THEN delivery_id END) AS sent,
        count(DISTINCT CASE WHEN metric = 'delivered' THEN delivery_id END) AS delivered,
        count(DISTINCT CASE WHEN metric = 'opened' THEN delivery_id END) AS opened,
        count(DISTINCT CASE WHEN metric = 'clicked' THEN delivery_id END) AS clicked
    FROM email_events
    GROUP BY event_date
) AS daily
