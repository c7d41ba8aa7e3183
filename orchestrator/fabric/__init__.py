"""The fabric model: place agents on a modelled Tenstorrent-like fabric and simulate training.

Entry points (docs/fabric.md explains the model):

* `Fabric.from_name(preset_or_toml)`: cores, NoC tori and Ethernet links; `preset_names()`.
* `place(workload, fabric, method)` / `place_topology(topology, fabric, method)` -> `Placement`.
* `simulate(placement, mode, microbatches, schedule)` -> `SimResult`.
* `chain_workload(...)`, `Workload`, `AgentCost`, `LinkCost`: costs as plain data;
  `costs_from_topology` and `count_flops` (in `.modelcost`, which imports torch) from modules.
"""

from .api import METHODS, cpu_plan, place, place_problem, place_topology
from .costs import AgentCost, LinkCost, Workload, chain_workload
from .errors import FabricError, PlacementError, UnknownName
from .fabric import Fabric
from .placement import Placement
from .presets import FabricSpec, load_spec, preset_names
from .simulate import SimResult, SimulationError, simulate

__all__ = [
    "METHODS", "AgentCost", "Fabric", "FabricError", "FabricSpec", "LinkCost", "Placement", "PlacementError",
    "SimResult", "SimulationError", "UnknownName", "Workload", "chain_workload", "cpu_plan", "load_spec", "place",
    "place_problem", "place_topology", "preset_names", "simulate",
]
