-- A key may also be an operator's: the console (/console) shows it the runs of every tenant,
-- not only its own. Its tenant is then only a label; the agent API's /v1 routes still answer
-- for that tenant alone, so an operator key posts no turns and reads no runs of others there.
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check CHECK (role IN ('approver', 'operator'));
