ALTER TABLE deployments DROP CONSTRAINT IF EXISTS deployments_agent_seq_check;
ALTER TABLE deployments DROP COLUMN IF EXISTS agent_seq;
DROP TABLE IF EXISTS deployment_logs;
