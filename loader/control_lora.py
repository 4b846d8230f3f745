"""BFL's Flux control LoRAs (FLUX.1 Canny/Depth [dev] LoRA): LoRA modules, RMSNorm scales replaced outright,
and an image input layer `img_in` widened to take the control image's latent beside the noise.

The file carries no marker but its names: `img_in.lora_A.weight` (rank × 2·64 inputs) and the norm scales
(`single_blocks.0.norm.key_norm.scale`), as the host tells it (comfy/lora_convert.py). Its norm scales are
`set_weight` modules (adapter_types/set_weight.py); `img_in`'s LoRA pads the weight to [lora_B rows, lora_A
columns] before adding its change (the host's `reshape_weight`), and the host's Flux model reads the wider
img_in to concatenate the control latent.
"""

from __future__ import annotations

WIDENED = "img_in"  # the module whose weight a control LoRA widens
_MARKERS = ("img_in.lora_A.weight", "single_blocks.0.norm.key_norm.scale")


def is_bfl_control(names) -> bool:
    """Whether a file with these tensor names is a BFL control LoRA."""
    return all(marker in names for marker in _MARKERS)


def is_set_scale(name: str) -> bool:
    """An RMSNorm scale the control LoRA replaces (`…query_norm.scale`, `…key_norm.scale`)."""
    return name.endswith("_norm.scale")
