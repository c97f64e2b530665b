DROP INDEX IF EXISTS webhook_deliveries_body_digest_idx;
ALTER TABLE webhook_deliveries DROP COLUMN IF EXISTS body_digest;
DROP TABLE IF EXISTS git_credential_shares;
ALTER TABLE git_credentials DROP COLUMN IF EXISTS known_hosts;
ALTER TABLE git_credentials DROP COLUMN IF EXISTS allowed_hosts;
DROP INDEX IF EXISTS apps_webhook_secret_set_by_idx;
ALTER TABLE apps DROP COLUMN IF EXISTS webhook_secret_set_by;
ALTER TABLE servers DROP COLUMN IF EXISTS allow_root;
