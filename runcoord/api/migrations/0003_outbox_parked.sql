-- A row Kafka refuses for good (a record over the size limit, an invalid record) is parked
-- instead of being retried for ever, which stopped the relay for every row behind it: the
-- relay dead-letters it to runs.dlq and sets failed_at and failure (the reason). A parked row
-- is never sent; GET /v1/runs/{run_id} reports its run as failed with that reason.
ALTER TABLE api_outbox ADD COLUMN failed_at timestamptz, ADD COLUMN failure text;

-- The relay's work list: unsent and not parked.
DROP INDEX api_outbox_unsent;
CREATE INDEX api_outbox_unsent ON api_outbox (topic, id) WHERE sent_at IS NULL AND failed_at IS NULL;

-- A run's parked StartRun, looked up by its key when the run has no projection.
CREATE INDEX api_outbox_parked ON api_outbox (record_key) WHERE failed_at IS NOT NULL;
