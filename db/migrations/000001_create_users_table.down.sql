DROP TABLE IF EXISTS users;
DROP FUNCTION IF EXISTS berth_set_updated_at();
