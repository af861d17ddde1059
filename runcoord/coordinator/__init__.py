"""The coordinator: the exactly-once loop that applies runs.inbox to the pure domain
(runcoord/domain/), and its command."""
