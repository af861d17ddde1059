-- The effect ledger: one row per effect key. It makes executing a side effect at-most-once
-- per key (guarantee G1). Executors are at-least-once; this table is what stops the second one.
--
-- Life of a row:
--   claim      INSERT … ON CONFLICT DO NOTHING  -> state 'claimed', fencing_token 1
--   take-over  compare-and-set UPDATE on an expired lease -> fencing_token + 1
--   mark_sent  sent_at = now(), right before the outside world is called
--   complete   state 'succeeded' | 'failed' | 'unknown', fenced by fencing_token; final.
CREATE TABLE effect_ledger (
    effect_key       text PRIMARY KEY,
    kind             text NOT NULL,
    tenant           text NOT NULL,
    run_id           text NOT NULL,
    -- Provider-call effects (create_run, submit_tool_outputs) have no tool call, some no step.
    step_id          text,
    tool_call_id     text,
    -- sha256 of the request's canonical JSON: the same key with another request is a bug upstream.
    request_hash     text NOT NULL,
    state            text NOT NULL DEFAULT 'claimed'
                     CHECK (state IN ('claimed', 'succeeded', 'failed', 'unknown')),
    -- Grows on every take-over; only the holder of the current token may mark, renew, complete.
    fencing_token    bigint NOT NULL DEFAULT 1 CHECK (fencing_token >= 1),
    attempts         integer NOT NULL DEFAULT 1 CHECK (attempts >= 1),
    lease_owner      text,
    lease_expires_at timestamptz,
    claimed_at       timestamptz NOT NULL DEFAULT now(),
    -- Set by the latest attempt that reached the outside world and never cleared by a take-over:
    -- once any attempt may have acted, every later claimant must treat the outcome as unknown.
    sent_at          timestamptz,
    completed_at     timestamptz,
    result           jsonb,
    error            text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT effect_ledger_completed_iff_final
        CHECK ((state = 'claimed') = (completed_at IS NULL)),
    CONSTRAINT effect_ledger_claim_has_lease
        CHECK (state <> 'claimed' OR (lease_owner IS NOT NULL AND lease_expires_at IS NOT NULL))
);

-- Forensics: every effect of a run.
CREATE INDEX effect_ledger_run_id ON effect_ledger (run_id);
-- A sweeper (or an operator) finds abandoned claims without scanning finished rows.
CREATE INDEX effect_ledger_open_leases ON effect_ledger (lease_expires_at) WHERE state = 'claimed';

-- A finished row is a fact the outside world already saw: nothing may rewrite it, not even an
-- ad-hoc UPDATE. The adapters never try (their UPDATEs all require state = 'claimed').
-- DELETE stays allowed so that a retention job can drop rows older than any redelivery.
CREATE FUNCTION effect_ledger_final_rows_are_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'effect_ledger row % is final (state %) and cannot change',
        OLD.effect_key, OLD.state
        USING ERRCODE = 'integrity_constraint_violation';
END;
$$;

CREATE TRIGGER effect_ledger_final_rows_are_immutable
    BEFORE UPDATE ON effect_ledger
    FOR EACH ROW WHEN (OLD.state <> 'claimed')
    EXECUTE FUNCTION effect_ledger_final_rows_are_immutable();
