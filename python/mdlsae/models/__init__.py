"""Models layer: the SAE itself (``sae``: the forward pass of DESIGN §2 and the SAELens on-disk
layout), readers of every SAE layout people have (``formats/``: one module per library) and the trainers (``train/``: the
shared loop and one objective per architecture). Imports the data layer and the base modules,
never the measurement, codec or selection layers above it.
"""

from .sae import SAE, SAEConfig

__all__ = ["SAE", "SAEConfig"]
