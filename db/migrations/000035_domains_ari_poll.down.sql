DROP INDEX IF EXISTS domains_tls_ari_next_poll_at_idx;
ALTER TABLE domains DROP COLUMN tls_ari_next_poll_at;
