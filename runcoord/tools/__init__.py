"""Tools: the gateway port, answer intake, and the tool executor that calls each tool at most once."""
