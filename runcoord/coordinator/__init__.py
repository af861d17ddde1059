"""The coordinator: the run state machine (pure), its events, and the exactly-once loop."""
