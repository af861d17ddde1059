"""The simulated provider: OpenAI's REST shapes under /v1, scripted turns, fault knobs.

See README.md in this folder for the script format, the config file and the /_sim API.
"""

from runcoord.sim.provider.app import create_app
from runcoord.sim.provider.clock import Clock, ManualClock, SystemClock
from runcoord.sim.provider.config import SimConfig, config_from_dict, load_config

__all__ = [
    "Clock",
    "ManualClock",
    "SimConfig",
    "SystemClock",
    "config_from_dict",
    "create_app",
    "load_config",
]
