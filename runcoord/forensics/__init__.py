"""Forensics (G6): the run projection in PostgreSQL, one run's explained story, and scans for
anomalies across runs. See runcoord/forensics/README.md."""
