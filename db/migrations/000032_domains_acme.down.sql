DELETE FROM deployments WHERE kind IN ('site', 'acme');
ALTER TABLE deployments DROP CONSTRAINT deployments_result_check;
ALTER TABLE deployments DROP CONSTRAINT deployments_params_check;
ALTER TABLE deployments DROP COLUMN result;
ALTER TABLE deployments DROP COLUMN params;
ALTER TABLE deployments DROP CONSTRAINT deployments_kind_check;
ALTER TABLE deployments ADD CONSTRAINT deployments_kind_check CHECK (kind IN ('deploy', 'delete', 'process', 'schedule'));

DROP TRIGGER apps_delete_domains ON apps;
DROP FUNCTION berth_delete_app_domains();

DROP INDEX domains_dns_provider_id_idx;
ALTER TABLE domains DROP CONSTRAINT domains_wildcard_dns_check;
ALTER TABLE domains DROP CONSTRAINT domains_tls_certificate_check;
ALTER TABLE domains DROP COLUMN tls_ari_window_end;
ALTER TABLE domains DROP COLUMN tls_ari_window_start;
ALTER TABLE domains DROP COLUMN tls_expiring_notified_at;
ALTER TABLE domains DROP COLUMN tls_failures;
ALTER TABLE domains DROP COLUMN hsts;
ALTER TABLE domains DROP COLUMN tls_serial;
ALTER TABLE domains DROP COLUMN tls_certificate;
ALTER TABLE domains DROP COLUMN dns_provider_id;

ALTER TABLE apps DROP CONSTRAINT apps_static_root_check;
ALTER TABLE apps DROP CONSTRAINT apps_upstream_url_check;
ALTER TABLE apps DROP COLUMN static_root;
ALTER TABLE apps DROP COLUMN upstream_url;

DROP TABLE dns_providers;
DROP TABLE acme_accounts;
