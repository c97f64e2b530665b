DELETE FROM login_attempts WHERE stage = 'password_reset';
ALTER TABLE login_attempts DROP CONSTRAINT login_attempts_stage_check;
ALTER TABLE login_attempts ADD CONSTRAINT login_attempts_stage_check
    CHECK (stage IN ('password', 'two_factor'));
