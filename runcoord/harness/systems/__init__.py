"""The systems a replay can drive: how to start their replicas and hand them turns."""
