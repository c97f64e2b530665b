DROP TABLE IF EXISTS login_attempts;
