-- Which assistants each tenant may run. An assistant holds instructions and files; a tenant
-- naming another tenant's assistant id must be refused, not served. The API's default
-- assistant (`api serve --assistant-id`) needs no row: every tenant may use it.
CREATE TABLE api_tenant_assistants (
    tenant        text NOT NULL,
    assistant_id  text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant, assistant_id)
);
