-- Reverses 000022. Each table gets its own old names back; rows written
-- after the upgrade under a kind that had no old name keep it.
UPDATE activity_log SET action = CASE action
    WHEN 'token.created' THEN 'api_token.create'
    WHEN 'token.revoked' THEN 'api_token.revoke'
    WHEN 'user.logged_out' THEN 'user.logout'
    WHEN 'session.revoked' THEN 'session.revoke'
    WHEN 'user.created' THEN 'user.create'
    WHEN 'user.invited' THEN 'user.invite'
    WHEN 'user.invite_resent' THEN 'user.invite_resend'
    WHEN 'user.invite_accepted' THEN 'user.invite_accept'
    WHEN 'user.disabled' THEN 'user.disable'
    WHEN 'user.enabled' THEN 'user.enable'
    WHEN 'password.changed' THEN 'user.password_change'
    WHEN 'password.reset_requested' THEN 'user.password_reset_request'
    WHEN 'password.reset' THEN 'user.password_reset'
    WHEN 'two_factor.setup_started' THEN 'user.two_factor_setup'
    WHEN 'two_factor.enabled' THEN 'user.two_factor_enable'
    WHEN 'two_factor.disabled' THEN 'user.two_factor_disable'
    WHEN 'two_factor.recovery_codes_regenerated' THEN 'user.recovery_codes_regenerate'
    END
WHERE action IN ('token.created', 'token.revoked', 'user.logged_out', 'session.revoked', 'user.created',
    'user.invited', 'user.invite_resent', 'user.invite_accepted', 'user.disabled', 'user.enabled',
    'password.changed', 'password.reset_requested', 'password.reset', 'two_factor.setup_started',
    'two_factor.enabled', 'two_factor.disabled', 'two_factor.recovery_codes_regenerated');

UPDATE security_events SET type = CASE type
    WHEN 'token.created' THEN 'token_created'
    WHEN 'token.revoked' THEN 'token_revoked'
    WHEN 'session.revoked' THEN 'session_revoked'
    WHEN 'user.created' THEN 'user_created'
    WHEN 'user.invited' THEN 'user_invited'
    WHEN 'user.invite_accepted' THEN 'user_invite_accepted'
    WHEN 'user.disabled' THEN 'user_disabled'
    WHEN 'user.enabled' THEN 'user_enabled'
    WHEN 'password.changed' THEN 'password_changed'
    WHEN 'password.reset_requested' THEN 'password_reset_requested'
    WHEN 'password.reset' THEN 'password_reset'
    WHEN 'two_factor.enabled' THEN 'two_factor_enabled'
    WHEN 'two_factor.disabled' THEN 'two_factor_disabled'
    WHEN 'two_factor.recovery_codes_regenerated' THEN 'recovery_codes_regenerated'
    WHEN 'two_factor.code_replayed' THEN 'totp_replay'
    WHEN 'two_factor.recovery_code_used' THEN 'recovery_code_used'
    WHEN 'login.failed_burst' THEN 'login_failed_burst'
    WHEN 'login.throttled' THEN 'login_throttled'
    END
WHERE type IN ('token.created', 'token.revoked', 'session.revoked', 'user.created', 'user.invited',
    'user.invite_accepted', 'user.disabled', 'user.enabled', 'password.changed', 'password.reset_requested',
    'password.reset', 'two_factor.enabled', 'two_factor.disabled', 'two_factor.recovery_codes_regenerated',
    'two_factor.code_replayed', 'two_factor.recovery_code_used', 'login.failed_burst', 'login.throttled');

DROP INDEX api_tokens_parent_token_id_idx;
ALTER TABLE api_tokens DROP COLUMN parent_token_id;
