"""torchproof: prove an NVIDIA PyTorch container release on each GPU node, and label the nodes."""

__version__ = "0.1.0"
