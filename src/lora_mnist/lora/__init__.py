"""What LoRA adds: the low-rank update on frozen weights, adapters in PEFT's format, fine-tuning, the zoo."""
