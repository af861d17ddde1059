"""Simulators: the Assistants/Responses provider and the sandbox tool gateway."""
