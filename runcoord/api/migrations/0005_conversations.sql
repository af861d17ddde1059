-- A thread id is the tenant's own conversation id: two tenants may both have "support-1", and
-- each gets its own provider thread (created by the provider executor on the first turn, under
-- the effect ledger). Scoped per tenant instead of first-come across tenants.
ALTER TABLE api_threads DROP CONSTRAINT api_threads_pkey;
ALTER TABLE api_threads ADD PRIMARY KEY (tenant, thread_id);
ALTER TABLE api_threads ADD COLUMN metadata jsonb NOT NULL DEFAULT '{}'::jsonb;
DROP INDEX IF EXISTS api_turns_thread;
CREATE INDEX api_turns_thread ON api_turns (tenant, thread_id, created_at);
