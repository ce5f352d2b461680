"""gpufleet: provision GPU inference hosts on EC2 and bake their AMIs."""

__version__ = "0.1.0"
