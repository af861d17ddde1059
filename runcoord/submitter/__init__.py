"""Tool-result intake and the submission executor."""
