"""``runcoord replay``: drive a trace through a system under a fault plan, and keep the
evidence (runcoord/harness/report/data.py) for the report."""
