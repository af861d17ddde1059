"""The executors' shared runtime: the effect ledger, the guard that runs one effect under
it, concurrency limits, the consumer loop and the plumbing of one replica."""
