"""Search spaces: keras-tuner HyperModels with genotype codecs and published architectures."""

from tfnas.spaces.auxcell import AuxCellSpace
from tfnas.spaces.base import MAIN_OUTPUT, DecoderSpace
from tfnas.spaces.dpc import DPCSpace
from tfnas.spaces.fabric import FabricSpace
from tfnas.spaces.template import TemplateSpace

SPACES = {"auxcell": AuxCellSpace, "template": TemplateSpace, "dpc": DPCSpace, "fabric": FabricSpace}


def get_space(name):
    """The space class registered under `name` (`"auxcell"`, ...).

    Raises:
        ValueError: for an unknown space name, listing the known ones.
    """
    if name not in SPACES:
        raise ValueError(f"unknown space {name!r}; expected one of {sorted(SPACES)}")
    return SPACES[name]


__all__ = [
    "AuxCellSpace",
    "DPCSpace",
    "DecoderSpace",
    "FabricSpace",
    "MAIN_OUTPUT",
    "SPACES",
    "TemplateSpace",
    "get_space",
]
