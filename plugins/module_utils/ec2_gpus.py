"""EC2 instance types' GPUs in one place: how many, which, how much memory each, and which
types hold a model. The inventory plugin reads a host's GPUs from it; the capacity playbook
picks a pool's instance types with it. Standard library only."""

from __future__ import annotations

from collections.abc import Iterable

GIB = 2**30

# EC2 GPU families: (GPU, memory per GPU in GiB, GPUs by size, GPUs otherwise).
GPU_FAMILIES: dict[str, tuple[str, int, dict[str, int], int]] = {
    "g4dn": ("NVIDIA T4", 16, {"12xlarge": 4, "metal": 8}, 1),
    "g4ad": ("AMD Radeon Pro V520", 8, {"8xlarge": 2, "16xlarge": 4}, 1),
    "g5": ("NVIDIA A10G", 24, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "g5g": ("NVIDIA T4G", 16, {"16xlarge": 2, "metal": 2}, 1),
    "g6": ("NVIDIA L4", 24, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "gr6": ("NVIDIA L4", 24, {}, 1),
    "g6e": ("NVIDIA L40S", 48, {"12xlarge": 4, "24xlarge": 4, "48xlarge": 8}, 1),
    "p3": ("NVIDIA V100", 16, {"8xlarge": 4, "16xlarge": 8}, 1),
    "p3dn": ("NVIDIA V100", 32, {}, 8),
    "p4d": ("NVIDIA A100", 40, {}, 8),
    "p4de": ("NVIDIA A100", 80, {}, 8),
    "p5": ("NVIDIA H100", 80, {"4xlarge": 1}, 8),
    "p5e": ("NVIDIA H200", 141, {}, 8),
    "p5en": ("NVIDIA H200", 141, {}, 8),
}


def gpu_profile(instance_type: str) -> tuple[int, str, int]:
    """GPU count, model and memory per GPU in GiB for an instance type; 0, '', 0 without GPUs."""
    family, _dot, size = instance_type.partition(".")
    known = GPU_FAMILIES.get(family)
    if known is None:
        return 0, "", 0
    model, memory, by_size, otherwise = known
    return by_size.get(size, otherwise), model, memory


def gpu_memory_bytes(instance_type: str) -> int:
    """All the instance type's GPU memory; 0 for a type without known GPUs."""
    count, _model, memory_gib = gpu_profile(instance_type)
    return count * memory_gib * GIB


def needed_bytes(model_bytes: int, margin: float) -> int:
    """GPU memory a model needs: its weights plus margin (a fraction) for context and runtime."""
    return int(model_bytes * (1 + margin))


def types_that_hold(instance_types: Iterable[str], model_bytes: int, margin: float) -> list[str]:
    """The instance types, in their order, with NVIDIA GPUs (the image's driver) whose memory
    holds the model and its margin."""
    needed = needed_bytes(model_bytes, margin)
    return [
        t
        for t in instance_types
        if gpu_profile(t)[1].startswith("NVIDIA ") and gpu_memory_bytes(t) >= needed
    ]
