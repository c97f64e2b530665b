DROP TABLE IF EXISTS alert_states;
DROP TABLE IF EXISTS alert_rules;
DROP FUNCTION IF EXISTS berth_alert_rules_changed();
