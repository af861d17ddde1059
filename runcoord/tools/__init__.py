"""Tools: the gateway port, answer intake, and the executor that calls each tool at most once."""
