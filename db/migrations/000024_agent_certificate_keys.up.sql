-- 000024 agent certificate keys (issue 15, sections 5 and 3).
--
-- spki_sha256 is the SHA-256 of the certificate's SubjectPublicKeyInfo,
-- recorded when the CA issues it and compared on every agent connection: a
-- certificate forged with a leaked CA key and a real serial carries another
-- key and is refused. Rows issued before this migration have none; the
-- first connection after the upgrade records the key it presents (the real
-- agent reconnects within seconds of the controller's restart), and from
-- then on the key is fixed.
ALTER TABLE agent_certificates ADD COLUMN spki_sha256 bytea;
ALTER TABLE agent_certificates ADD CONSTRAINT agent_certificates_spki_sha256_check
    CHECK (spki_sha256 IS NULL OR length(spki_sha256) = 32);
