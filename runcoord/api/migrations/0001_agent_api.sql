-- The agent API's tables: tenants' API keys, accepted turns with their idempotency keys, the
-- outbox the relay publishes to runs.inbox, and the provider webhooks received.

-- A key is "rk_<key_id>_<secret>"; only sha256(key) is stored. The secret is 32 random bytes,
-- so a fast hash is enough (nothing to brute-force, unlike a password).
CREATE TABLE api_keys (
    key_id      text PRIMARY KEY,
    tenant      text NOT NULL,
    key_hash    text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

CREATE INDEX api_keys_tenant ON api_keys (tenant);

-- The first tenant to post a turn to a thread owns it: another tenant's turns on it get 404.
CREATE TABLE api_threads (
    thread_id   text PRIMARY KEY,
    tenant      text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- One row per accepted turn. (tenant, idempotency_key) is the client's retry handle: a POST
-- repeating it gets the same run back (and bumps `repeats`, for forensics) instead of a new one.
CREATE TABLE api_turns (
    tenant           text NOT NULL,
    idempotency_key  text NOT NULL,
    run_id           text NOT NULL UNIQUE,
    thread_id        text NOT NULL,
    -- sha256 of the turn as posted: the same key with another body is refused, not guessed.
    request_hash     text NOT NULL,
    assistant_id     text NOT NULL,
    provider         text NOT NULL,
    input            text NOT NULL,
    inbox            text NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    repeats          integer NOT NULL DEFAULT 0,
    last_repeat_at   timestamptz,
    PRIMARY KEY (tenant, idempotency_key)
);

CREATE INDEX api_turns_thread ON api_turns (thread_id, created_at);

-- Records to publish, written in the same transaction as what they announce. The relay
-- produces them (idempotent producer, keyed by run_id) and sets sent_at only after Kafka
-- acknowledged them; a crash in between re-sends, and the coordinator ignores the copy.
CREATE TABLE api_outbox (
    id           bigserial PRIMARY KEY,
    topic        text NOT NULL,
    record_key   bytea NOT NULL,
    record_name  text NOT NULL,
    payload      bytea NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    sent_at      timestamptz
);

CREATE INDEX api_outbox_unsent ON api_outbox (topic, id) WHERE sent_at IS NULL;

-- Provider webhooks, once each (webhook-id), with what we did with them and why.
CREATE TABLE api_webhook_events (
    webhook_id          text PRIMARY KEY,
    event_type          text NOT NULL,
    provider_object_id  text,
    run_id              text,
    -- observation: published to runs.inbox; recorded: kept only, `reason` says why
    handling            text NOT NULL CHECK (handling IN ('observation', 'recorded')),
    reason              text,
    body                jsonb NOT NULL,
    received_at         timestamptz NOT NULL DEFAULT now()
);
