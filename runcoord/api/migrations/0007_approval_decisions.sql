-- Decisions on approval requests, made through POST /v1/approvals/{approval_id}: at most one
-- per approval, whoever races. The row and the outbox row carrying its ApprovalDecision to
-- runs.inbox commit in one transaction (INSERT … ON CONFLICT DO NOTHING): the loser of a race
-- finds the winner's row and is told it, and a decision is never sent twice or lost.
CREATE TABLE api_approval_decisions (
    approval_id      text PRIMARY KEY,
    tenant           text NOT NULL,
    run_id           text NOT NULL,
    decision         text NOT NULL CHECK (decision IN ('approve', 'reject')),
    reason           text NOT NULL,
    -- The deciding key's name, else its id: what the coordinator records and the model reads.
    approver         text NOT NULL,
    key_id           text NOT NULL,
    -- The client's retry handle, once per tenant: reused for another decision, refused. The
    -- same decision again (approver, decision, reason), under any key, is a replay.
    idempotency_key  text NOT NULL,
    -- What the approver saw: copied from the projected request, sent with the decision, so
    -- the coordinator refuses it if the call or the rules are not those any more.
    arguments_hash   text NOT NULL,
    policy_version   text NOT NULL,
    decided_at       timestamptz NOT NULL,
    UNIQUE (tenant, idempotency_key)
);
