"""On-disk names: tensor keys, PEFT's file and key names, finetune's output directory (constants, no imports)."""

from __future__ import annotations

LORA_MARK = "lora_"  # in the name of every LoRA tensor, and of no other
ORIGINAL_SUFFIX = ".parametrizations.weight.original"  # where parametrize keeps the frozen weight
PEFT_PREFIX = "base_model.model."  # PEFT's prefix for the wrapped model's modules
ADAPTER_CONFIG = "adapter_config.json"  # PEFT's file names inside an adapter directory
ADAPTER_WEIGHTS = "adapter_model.safetensors"
# finetune's output directory holds the PEFT adapter and, beside it, what verify and people need:
FINETUNED = "finetuned.safetensors"  # the whole fine-tuned model: frozen originals + LoRA factors
MERGED = "merged.safetensors"  # W + scale * B @ A folded in: a plain RichBoyNet state_dict


def peft_key(module: str, part: str) -> str:
    """PEFT adapter key of LoRA factor `part` ("A" (r, in) or "B" (out, r)) of `module`."""
    return f"{PEFT_PREFIX}{module}.lora_{part}.weight"


def plain_name(key: str) -> str | None:
    """Plain RichBoyNet name of a fine-tuned state_dict key (None for LoRA tensors)."""
    if LORA_MARK in key:
        return None
    return key.replace(ORIGINAL_SUFFIX, ".weight")


def lora_factor(key: str) -> tuple[str, str]:
    """(module, "A" | "B") of a fine-tuned LoRA key such as `linear1.parametrizations.weight.0.lora_A`."""
    module, _, part = key.partition(".parametrizations.")
    return module, part.rsplit(LORA_MARK, 1)[-1]
ZOO_RECORD = "training.json"  # beside each zoo adapter: what was trained, as sha256 digests (for verify)
