-- Every subscription change: person-level subscribed, unsubscribed and preference changes (in
-- customer_events whatever their object_type), and message-level unsubscribes (an unsubscribed
-- event with a delivery_id, kept in its channel's table).
SELECT
    event_id,
    event_time,
    event_date,
    received_at,
    customer_key,
    customer_id,
    identifier_id,
    identifier_email,
    identifier_cio_id,
    email_address,
    object_type,
    CASE
        WHEN metric = 'cio_subscription_preferences_changed' THEN 'preferences_changed'
        ELSE metric
    END AS change,
    CASE WHEN delivery_id IS NULL THEN 'person' ELSE 'message' END AS level,
    delivery_id,
    campaign_id,
    broadcast_id,
    newsletter_id,
    transactional_message_id,
    action_id,
    CASE WHEN metric = 'cio_subscription_preferences_changed' THEN content END AS preferences
FROM customerio_events
WHERE metric IN ('subscribed', 'unsubscribed', 'cio_subscription_preferences_changed')
