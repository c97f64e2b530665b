-- ARI (RFC 9773) is asked again on the CA's schedule (its Retry-After,
-- bounded), not only once after issuance: a CA that moves a window
-- earlier (a mass revocation) is heard. NULL: not polled (no ARI, or no
-- certificate).
ALTER TABLE domains ADD COLUMN tls_ari_next_poll_at timestamptz;
CREATE INDEX domains_tls_ari_next_poll_at_idx ON domains (tls_ari_next_poll_at) WHERE tls_ari_next_poll_at IS NOT NULL;
-- Certificates issued before this migration with an ARI window are polled
-- at once.
UPDATE domains SET tls_ari_next_poll_at = now()
WHERE tls_mode = 'acme' AND tls_certificate IS NOT NULL AND tls_ari_window_start IS NOT NULL;
