"""`runcoord dev`: the stack and every product process in one command, supervised, with one
combined log; `runcoord turn` posts a turn to it. See runcoord/dev/cli.py."""
