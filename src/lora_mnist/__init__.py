"""lora-mnist: a reproducible DVC pipeline that shows what LoRA does to a pretrained MLP."""
