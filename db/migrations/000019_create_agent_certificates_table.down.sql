DROP TABLE IF EXISTS agent_certificates;
