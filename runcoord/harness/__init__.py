"""The evaluation harness: workload traces, replay with faults, the baseline, the report.

Ground truth is the sandbox gateway's audit log, never HTTP status codes (DESIGN.md,
"Harness (evaluation)"). See README.md in this folder for the trace, plan and report formats.
"""
