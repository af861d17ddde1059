-- The sandbox tool gateway's tables. `sandbox_audit` is the evaluation's ground truth: one row
-- per REAL action of a write tool, written in the same transaction as the tool's own state and
-- before the tool answers. HTTP status codes are not evidence; these rows are.
CREATE TABLE sandbox_audit (
    id              bigserial PRIMARY KEY,
    tool            text NOT NULL,
    tenant          text NOT NULL,
    run_id          text,
    tool_call_id    text,
    -- sha256 of the request body's canonical JSON: duplicate-like clusters are found by
    -- (tool, tenant, payload_hash) within a time window.
    payload_hash    text NOT NULL,
    -- As received, whether or not the tool honours it.
    idempotency_key text,
    fencing_token   bigint,
    acted_at        timestamptz NOT NULL DEFAULT clock_timestamp()
);

CREATE INDEX sandbox_audit_run_id ON sandbox_audit (run_id);
CREATE INDEX sandbox_audit_clusters ON sandbox_audit (tool, tenant, payload_hash, acted_at);

-- The tools' own state: what each action answered. Key-honouring tools dedupe on
-- (tool, tenant, idempotency_key); update_crm records the key it was sent as `ref` (it does not
-- dedupe on it) so that a caller can look its actions up.
CREATE TABLE sandbox_actions (
    audit_id        bigint PRIMARY KEY REFERENCES sandbox_audit (id) ON DELETE CASCADE,
    tool            text NOT NULL,
    tenant          text NOT NULL,
    idempotency_key text,
    ref             text,
    payload_hash    text NOT NULL,
    response        jsonb NOT NULL
);

CREATE UNIQUE INDEX sandbox_actions_idempotency
    ON sandbox_actions (tool, tenant, idempotency_key) WHERE idempotency_key IS NOT NULL;
CREATE INDEX sandbox_actions_ref ON sandbox_actions (tool, tenant, ref) WHERE ref IS NOT NULL;
