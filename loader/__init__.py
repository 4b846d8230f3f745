"""Host-independent LoRA core: torch, safetensors and numpy only; never imports comfy."""
