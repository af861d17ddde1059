-- Fencing at the tool (tools.yaml, "Request deadlines and fencing"): per effect key (the
-- Idempotency-Key) and tenant, the highest X-Fencing-Token any write request has carried.
-- Raised with GREATEST in the same transaction as the action; a request whose token is lower
-- is refused (409) without acting. A newer holder of the effect (a take-over in the ledger)
-- thus shuts out every request of the older ones that is still on its way.
CREATE TABLE sandbox_fences (
    tenant     text   NOT NULL,
    effect_key text   NOT NULL,
    token      bigint NOT NULL,
    seen_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, effect_key)
);
