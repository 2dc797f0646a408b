"""Device and determinism, resolved in one place for every compute stage."""

from __future__ import annotations

import os

import torch

from lora_mnist.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """Map the `device` param to a torch.device; a requested accelerator that is absent is an error."""
    cuda, mps = torch.cuda.is_available(), torch.backends.mps.is_available()
    if name == "auto":
        name = "cuda" if cuda else "mps" if mps else "cpu"
    if name == "cuda" and not cuda:
        raise ConfigError("params: device = 'cuda' but no CUDA device is available (use cpu or auto)")
    if name == "mps" and not mps:
        raise ConfigError("params: device = 'mps' but no MPS device is available (use cpu or auto)")
    return torch.device(name)


def configure_torch(device: torch.device) -> None:
    """No denormals; on accelerators, deterministic kernels as far as they allow (CPU ones already are)."""
    # Adam's second moments drift into float32 denormals during pretraining; x86 handles those in
    # microcode, which made steps 4x slower. Flushing them to zero is deterministic and harmless here.
    torch.set_flush_denormal(True)
    if device.type == "cpu":
        return  # the CPU kernels we use are deterministic; the flag below costs a 1.3 s import per stage
    # cuBLAS needs a fixed workspace for deterministic GEMMs; read when its first handle is created.
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)  # warn, not crash, on an op CUDA lacks
    torch.backends.cudnn.benchmark = False


def generator(seed: int) -> torch.Generator:
    """A CPU generator: every random draw (init, shuffle) comes from one of these, never global state."""
    return torch.Generator().manual_seed(seed)
