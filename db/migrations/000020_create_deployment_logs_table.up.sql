-- 000020 deployment_logs: a deployment's output, in the numbered chunks the
-- agent sends. The agent numbers every event of a job (output, progress,
-- result) from 1; deployments.agent_seq is the highest one the controller
-- committed, so a chunk re-sent after a lost ack or a controller restart is
-- recognised and stored once. A log is size-capped (deployments.log_bytes,
-- log_truncated): past the cap one chunk carries a visible truncation marker
-- and later output is counted but not stored.

CREATE TABLE deployment_logs (
    -- CASCADE: a log means nothing without its deployment.
    deployment_id uuid        NOT NULL REFERENCES deployments (id) ON DELETE CASCADE,
    -- The agent's event number (gaps are progress/result events, which
    -- carry no output).
    seq           bigint      NOT NULL,
    -- Deploy step that produced the output (fetch, build, ...); '' for
    -- lines the controller adds.
    step          text        NOT NULL DEFAULT '',
    -- Raw output bytes (not necessarily UTF-8), already redacted by the agent.
    data          bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),

    PRIMARY KEY (deployment_id, seq),
    CONSTRAINT deployment_logs_seq_check CHECK (seq > 0),
    CONSTRAINT deployment_logs_data_check CHECK (octet_length(data) <= 1048576)
);

CREATE INDEX deployment_logs_created_at_idx ON deployment_logs (created_at);

-- The highest agent event number committed for the deployment (0: none).
ALTER TABLE deployments ADD COLUMN agent_seq bigint NOT NULL DEFAULT 0;
ALTER TABLE deployments ADD CONSTRAINT deployments_agent_seq_check CHECK (agent_seq >= 0);
