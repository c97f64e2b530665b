-- Going down forgets who already has a message: a pending retry then goes
-- to every address again (the behaviour before 000036).
ALTER TABLE notify_outbox DROP CONSTRAINT notify_outbox_refused_to_check;
ALTER TABLE notify_outbox DROP COLUMN refused_to;
ALTER TABLE notify_outbox DROP COLUMN delivered_to;
