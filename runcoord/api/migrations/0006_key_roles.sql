-- A key may carry a name (the person or system holding it) and a role. Only a key whose role
-- is `approver` may decide approval requests, and the decision is recorded under the key's
-- name (else its id): the approver the model is told about, and the one forensics shows.
-- No role: a key that posts turns and reads runs, as before.
ALTER TABLE api_keys
    ADD COLUMN name text CHECK (name <> ''),
    ADD COLUMN role text CHECK (role IN ('approver'));
