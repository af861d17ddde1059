-- Cancels requested through POST /v1/runs/{run_id}/cancel (and the console): the row and the
-- outbox row carrying its CancelRun to runs.inbox commit in one transaction, so a retried
-- request (the same Idempotency-Key) is answered from here and never sends a second one.
CREATE TABLE api_run_cancels (
    tenant           text NOT NULL,
    idempotency_key  text NOT NULL,
    run_id           text NOT NULL,
    reason           text NOT NULL,
    key_id           text NOT NULL,
    requested_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, idempotency_key)
);
