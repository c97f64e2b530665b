DROP TABLE IF EXISTS activity_log;
