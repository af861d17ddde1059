-- Outbound webhooks (runcoord/api/hooks.py, runcoord/api/deliver.py): the endpoints tenants
-- register, the run -> tenant map the deliverer keeps from the journal, and one delivery row
-- per (hook, event), written before the deliverer commits the journal offsets it came from.

-- The secret signs every delivery, so it is kept as is (unlike API keys); shown once, at
-- registration. Deleting a hook only marks it: its deliveries stay for forensics.
CREATE TABLE api_hooks (
    hook_id          text PRIMARY KEY,
    tenant           text NOT NULL,
    url              text NOT NULL,
    events           text[] NOT NULL,
    description      text,
    secret           text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    -- Set when the receiver answered 410 Gone: nothing more is sent to it.
    disabled_at      timestamptz,
    disabled_reason  text,
    deleted_at       timestamptz
);

CREATE INDEX api_hooks_tenant ON api_hooks (tenant) WHERE deleted_at IS NULL;

-- A run's tenant, from its RunAccepted (later events do not carry it), while the run is live:
-- removed in the transaction that records the run's RunFinished. Written in the same
-- transaction as the deliveries, before the offsets move, so it is never behind them.
CREATE TABLE api_hook_runs (
    journal  text NOT NULL,
    run_id   text NOT NULL,
    tenant   text NOT NULL,
    PRIMARY KEY (journal, run_id)
);

-- One row per hook and event: a journal record consumed twice (a crash before the offset
-- commit) finds its row and notifies nobody twice. `body` is the exact bytes every attempt
-- sends; `event_id` (run_id:seq) is every attempt's webhook-id. An attempt in flight has
-- moved next_attempt_at past its own deadline (a lease): a deliverer killed mid-attempt
-- leaves the row due again when that passes.
CREATE TABLE api_hook_deliveries (
    id               bigserial PRIMARY KEY,
    hook_id          text NOT NULL REFERENCES api_hooks (hook_id),
    journal          text NOT NULL,
    event_id         text NOT NULL,
    event_type       text NOT NULL,
    run_id           text NOT NULL,
    body             bytea NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts         integer NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz NOT NULL DEFAULT now(),
    last_status      integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (hook_id, journal, event_id)
);

CREATE INDEX api_hook_deliveries_due
    ON api_hook_deliveries (journal, next_attempt_at) WHERE state = 'pending';
CREATE INDEX api_hook_deliveries_run ON api_hook_deliveries (journal, run_id);
