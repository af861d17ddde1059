"""The submission executor: each step's outputs submitted to the provider exactly once."""
