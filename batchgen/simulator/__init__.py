"""A loopback HTTP stand-in for RunComfy's Model API: the demo backend and the tests' server."""

from batchgen.simulator._limits import check_config
from batchgen.simulator._server import SimulatorServer, serve
from batchgen.simulator._state import Simulator
from batchgen.simulator._types import Faults, SimulatorConfig, Submission

__all__ = [
    "Faults",
    "Simulator",
    "SimulatorConfig",
    "SimulatorServer",
    "Submission",
    "check_config",
    "serve",
]
