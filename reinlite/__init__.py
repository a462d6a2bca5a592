"""reinlite: Rein (CVPR 2024) for domain-generalized semantic segmentation, small and tested.

    from reinlite import Rein, build_backbone
"""
from .backbone import ReinBackbone, build_backbone, parameter_table
from .checkpoint import CheckpointError, load_rein_checkpoint
from .rein import Rein

__version__ = "0.1.0"
__all__ = ["Rein", "ReinBackbone", "build_backbone", "parameter_table", "load_rein_checkpoint",
           "CheckpointError", "__version__"]
