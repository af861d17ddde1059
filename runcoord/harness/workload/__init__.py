"""Workload traces: the JSONL format (``trace``) and the generator (``generate``)."""

from runcoord.harness.workload.trace import TraceCall, TraceTurn, read_trace, write_trace

__all__ = ["TraceCall", "TraceTurn", "read_trace", "write_trace"]
