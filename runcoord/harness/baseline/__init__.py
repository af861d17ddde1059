"""The baseline: a small coordinator that behaves like the seeds' "variant A".

It is NOT part of the product, and deliberately keeps variant A's habits, because those are
what the report must show the cost of:

- it polls the provider at a fixed interval;
- it dedupes tool calls in a per-process, in-memory LRU (lost on every restart);
- its correlation is permissive: when a submission is refused it submits the same outputs to
  whatever step is open now;
- its HTTP client retries the gateway on a timeout or a 5xx, each attempt with a fresh
  Idempotency-Key (keys are made per request, not per tool call);
- it reads turns from Kafka with auto-commit, so a replica killed mid-turn either loses
  the turn (its offset was committed: the run stays in requires_action) or hands it to
  another replica, which starts it over with an empty LRU.

Run as ``python -m runcoord.harness.baseline`` (one process per replica; see ``__main__``).
"""
