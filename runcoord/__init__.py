"""runcoord: exactly-once coordination of agent runs whose tools have side effects."""

__version__ = "0.1.0"
