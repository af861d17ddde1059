-- The run projection: where each run's history sits in Kafka, and what it amounts to, so that
-- `runcoord forensics run` finds a run without scanning the journal (G6) and the agent API
-- answers GET /v1/runs/{id}. Maintained by `runcoord forensics project`, a read_committed
-- consumer of runs.events, effects and runs.dlq; rebuildable at any time from those topics.
--
-- `journal` is the events topic the rows were read from ("runs.events", or a test's prefixed
-- copy): several topic sets can share one database without their run ids colliding.
-- Every write is an idempotent upsert, so a redelivered batch changes nothing.

CREATE TABLE forensics_runs (
    journal          text NOT NULL,
    run_id           text NOT NULL,
    tenant           text NOT NULL,
    thread_id        text NOT NULL,
    provider         text NOT NULL,
    -- sha256 of the turn's input: a resubmission is the same input on the same thread.
    input_hash       text NOT NULL,
    -- A run's records all sit on one partition (keyed by run_id, co-partitioned topics).
    kafka_partition  integer NOT NULL,
    first_offset     bigint NOT NULL,
    last_offset      bigint NOT NULL,
    -- The seq of the last event folded in: events at or below it are redeliveries.
    last_seq         integer NOT NULL,
    phase            text NOT NULL,
    provider_status  text,
    provider_run_id  text,
    -- The seq of the event that started the current provider watch (webhook observations
    -- must name it, or the coordinator ignores them as stale).
    watch_seq        integer NOT NULL DEFAULT 0,
    steps            integer NOT NULL DEFAULT 0,
    outcome          text,
    -- An earlier run with the same input on the same thread, shortly before: the client sent
    -- the turn again instead of retrying with its idempotency key.
    resubmission_of  text,
    accepted_at      timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    finished_at      timestamptz,
    PRIMARY KEY (journal, run_id)
);

CREATE INDEX forensics_runs_thread
    ON forensics_runs (journal, tenant, thread_id, input_hash, accepted_at);
CREATE INDEX forensics_runs_accepted ON forensics_runs (journal, accepted_at);
CREATE INDEX forensics_runs_provider_run ON forensics_runs (provider_run_id);

-- Every event's position in the journal: forensics seeks straight to these offsets.
CREATE TABLE forensics_events (
    journal          text NOT NULL,
    run_id           text NOT NULL,
    seq              integer NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    event_type       text NOT NULL,
    at               timestamptz NOT NULL,
    -- A short, human summary for scans (an ignored input's reason, a finish's reason).
    note             text,
    PRIMARY KEY (journal, run_id, seq)
);

-- Each step's clock: opened, its deadline, when its submission was requested and confirmed.
CREATE TABLE forensics_steps (
    journal            text NOT NULL,
    run_id             text NOT NULL,
    step_id            text NOT NULL,
    opened_at          timestamptz NOT NULL,
    deadline_at        timestamptz NOT NULL,
    calls              integer NOT NULL,
    submission_at      timestamptz,
    submission_reason  text,
    submitted_at       timestamptz,
    outcome            text,
    PRIMARY KEY (journal, run_id, step_id)
);

CREATE INDEX forensics_steps_opened ON forensics_steps (journal, opened_at);

-- Effect intents on the effects topic (same partition number as the run's events).
CREATE TABLE forensics_intents (
    journal          text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    run_id           text NOT NULL,
    effect_key       text NOT NULL,
    kind             text NOT NULL,
    at               timestamptz NOT NULL,
    PRIMARY KEY (journal, kafka_partition, kafka_offset)
);

CREATE INDEX forensics_intents_run ON forensics_intents (journal, run_id);

-- Dead letters, by run where the letter names one.
CREATE TABLE forensics_dead_letters (
    journal          text NOT NULL,
    kafka_partition  integer NOT NULL,
    kafka_offset     bigint NOT NULL,
    run_id           text,
    kind             text NOT NULL,
    reason           text NOT NULL,
    source_topic     text NOT NULL,
    record_name      text,
    at               timestamptz NOT NULL,
    PRIMARY KEY (journal, kafka_partition, kafka_offset)
);

CREATE INDEX forensics_dead_letters_run ON forensics_dead_letters (journal, run_id);
CREATE INDEX forensics_dead_letters_at ON forensics_dead_letters (journal, at);
