DROP TABLE IF EXISTS notify_outbox;
DROP TABLE IF EXISTS notify_rules;
DROP TABLE IF EXISTS notify_channels;
DROP TABLE IF EXISTS notify_events;
