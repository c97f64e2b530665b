-- 000025: password reset requests are recorded in login_attempts with the
-- stage password_reset, so they are throttled per address and per account
-- (email as typed, whether or not it has an account) like logins, and sit
-- in the same trail. They are recorded as succeeded (the request was
-- accepted) or throttled, never failed, so they do not count as login
-- failures.
ALTER TABLE login_attempts DROP CONSTRAINT login_attempts_stage_check;
ALTER TABLE login_attempts ADD CONSTRAINT login_attempts_stage_check
    CHECK (stage IN ('password', 'two_factor', 'password_reset'));
