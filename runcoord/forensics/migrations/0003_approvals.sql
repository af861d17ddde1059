-- Approval requests and their decisions, projected from ApprovalRequested and ApprovalDecided,
-- so the agent API lists what waits for a person (GET /v1/approvals) without reading the
-- journal, and decides with the arguments hash and rules version the request was made with.
--
-- Written like the other projected rows: a request is inserted once (a redelivery does
-- nothing), and its decision only moves a pending row (the first decision recorded stays).
-- `tenant` is the run's (the events do not repeat it): the API scopes every read by it.

CREATE TABLE forensics_approvals (
    journal          text NOT NULL,
    approval_id      text NOT NULL,
    run_id           text NOT NULL,
    tenant           text NOT NULL,
    step_id          text NOT NULL,
    tool_call_id     text NOT NULL,
    tool             text NOT NULL,
    -- sha256 of the call's arguments and the approval rules' version at the request: a
    -- decision must name both, or the coordinator refuses it.
    arguments_hash   text NOT NULL,
    policy_version   text NOT NULL,
    -- The ApprovalRequested's seq: the step's StepOpened (with the call's arguments) is the
    -- last one before it.
    request_seq      integer NOT NULL,
    deadline_at      timestamptz NOT NULL,
    requested_at     timestamptz NOT NULL,
    status           text NOT NULL DEFAULT 'pending'
                     CHECK (status IN ('pending', 'approve', 'reject', 'expired')),
    reason           text,
    approver         text,
    decided_at       timestamptz,
    PRIMARY KEY (journal, approval_id)
);

-- GET /v1/approvals?status=…: a tenant's approvals in one state, newest first.
CREATE INDEX forensics_approvals_tenant
    ON forensics_approvals (journal, tenant, status, requested_at DESC);
