DROP TABLE IF EXISTS git_credentials;
