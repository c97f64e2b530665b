DROP INDEX IF EXISTS apps_current_deployment_id_idx;
ALTER TABLE apps DROP CONSTRAINT IF EXISTS apps_current_deployment_fkey;
DROP TABLE IF EXISTS deployments;
