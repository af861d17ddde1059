-- The trace context (W3C traceparent) of the request that wrote the row: the relay sends it
-- as the record's `traceparent` header, so the coordinator's spans join the request's trace.
-- NULL when tracing was off.
ALTER TABLE api_outbox ADD COLUMN traceparent text;
