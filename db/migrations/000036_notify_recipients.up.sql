-- 000036 per-recipient mail delivery (issue 17 follow-up): an email
-- channel's message goes to each address on its own, and a retry must go
-- only to the addresses that did not get it, so nobody receives it twice.
--
-- delivered_to: the addresses the mail server accepted the message for
-- (DATA's final 250), recorded in the transaction that records the attempt.
-- refused_to: the addresses the server refused permanently (5xx on RCPT TO),
-- each with the server's reply; they are not tried again. The message ends
-- once every address is in one or the other: delivered when none was
-- refused, failed (a give-up for those addresses) otherwise.
ALTER TABLE notify_outbox ADD COLUMN delivered_to text[] NOT NULL DEFAULT '{}';
ALTER TABLE notify_outbox ADD COLUMN refused_to jsonb NOT NULL DEFAULT '{}';
ALTER TABLE notify_outbox ADD CONSTRAINT notify_outbox_refused_to_check
    CHECK (jsonb_typeof(refused_to) = 'object');
