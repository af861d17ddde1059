-- Console sign-ins. The browser keeps only a random session token (an HttpOnly cookie); its
-- hash is stored here with the key it signed in with, so the API key itself never sits in a
-- cookie, revoking the key ends its sessions at once, and signing out deletes the row.
-- csrf_token goes in the console's forms: a POST without it is refused (see console/).
CREATE TABLE console_sessions (
    session_hash  text PRIMARY KEY,
    key_id        text NOT NULL REFERENCES api_keys (key_id),
    csrf_token    text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL
);

CREATE INDEX console_sessions_expiry ON console_sessions (expires_at);
