"""Effect execution: the ledger and the executors that act on intents."""
