-- Bookkeeping for the controller's scheduled maintenance (metrics partitions,
-- retention). Not one of the seed's 16 tables: it records when each job last
-- finished so a weekly job stays weekly across controller restarts.
CREATE TABLE maintenance_runs (
    job           text        PRIMARY KEY,
    last_run_at   timestamptz NOT NULL,
    last_affected bigint      NOT NULL DEFAULT 0,
    updated_at    timestamptz NOT NULL DEFAULT now()
);
