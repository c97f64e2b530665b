DROP TABLE IF EXISTS backup_destinations;
