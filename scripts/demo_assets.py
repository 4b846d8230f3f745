"""The demo's models, built once with seeded random weights: a small SD1 checkpoint and three sample LoRAs.

The checkpoint is made from the host's own classes (its SD15 UNet, CLIP-L text encoder and SD VAE) and
saved under the prefixes a real SD1 checkpoint uses, so the host's `CheckpointLoaderSimple` detects it as
SD15. Only the UNet is narrowed: every level is 320 channels wide (channel_mult 1,1,1,1) but it keeps SD1's
12 input and 12 output blocks, attention levels and the 768-wide cross-attention. The LoRAs come from the
real producers on models of exactly those shapes: a kohya file (diffusers' converter), a diffusers/PEFT
file (diffusers' `save_lora_weights`) and a LyCORIS LoCon (lycoris-lora). The weights are random: the
pipeline is real, the pictures are noise.

`ensure(folder)` builds what is missing and returns the manifest; a second call reuses the files.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the host harness and the producer helpers live with the tests

import hosting  # noqa: E402
import producers  # noqa: E402

VERSION = 2  # bump when what is built changes: older folders are then rebuilt
CHECKPOINT = "loradeck-demo-sd15.safetensors"
LORA_FOLDER = "loradeck-demo"

UNET_CONFIG = dict(hosting.SD15_UNET, model_channels=320, context_dim=768, channel_mult=[1, 1, 1, 1], image_size=8)
VAE_CONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": 128,
              "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}
# The same network as UNET_CONFIG, as diffusers builds it (the LoRA producers work on diffusers models).
DIFFUSERS_UNET = {
    "sample_size": 8, "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "block_out_channels": (320,) * 4,
    "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    "cross_attention_dim": 768, "attention_head_dim": 8, "norm_num_groups": 32,
}
CLIP_L = {"hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12, "num_hidden_layers": 12,
          "max_position_embeddings": 77, "vocab_size": 49408, "projection_dim": 768, "hidden_act": "quick_gelu"}
ATTENTION = ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]


@dataclass(frozen=True)
class SampleLora:
    name: str  # as workflows name it, relative to the loras folder
    format: str
    producer: str
    rank: int
    alpha: float
    text_encoder: bool


SAMPLE_LORAS = (
    SampleLora(f"{LORA_FOLDER}/kohya_detail.safetensors", "kohya LoRA (lora_unet_/lora_te_, .alpha)",
               "peft + diffusers convert_state_dict_to_kohya", rank=8, alpha=4.0, text_encoder=True),
    SampleLora(f"{LORA_FOLDER}/peft_style.safetensors", "diffusers/PEFT LoRA (unet./text_encoder., lora_A/B)",
               "peft + diffusers StableDiffusionPipeline.save_lora_weights", rank=4, alpha=4.0, text_encoder=True),
    SampleLora(f"{LORA_FOLDER}/lycoris_locon.safetensors", "LyCORIS LoCon (lycoris_, linear + 3x3 conv)",
               "lycoris-lora create_lycoris(algo='locon')", rank=4, alpha=2.0, text_encoder=False),
)


def ensure(folder: str | os.PathLike, log=print) -> dict:
    """Build the checkpoint and LoRAs into `folder` (checkpoints/, loras/) unless they are there; the manifest."""
    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    manifest = _read_manifest(manifest_path)
    if manifest is not None:
        return manifest
    hosting.boot()
    timings = {}
    checkpoint = folder / "checkpoints" / CHECKPOINT
    started = time.perf_counter()
    save_checkpoint(checkpoint, seed=0)
    timings["checkpoint"] = round(time.perf_counter() - started, 2)
    log(f"built {checkpoint.relative_to(folder)} in {timings['checkpoint']} s")
    for index, lora in enumerate(SAMPLE_LORAS):
        started = time.perf_counter()
        path = folder / "loras" / lora.name
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = _partial(path)
        _BUILDERS[index](str(temporary), lora, seed=100 + index)
        os.replace(temporary, path)
        timings[lora.name] = round(time.perf_counter() - started, 2)
        log(f"built loras/{lora.name} in {timings[lora.name]} s")
    manifest = {
        "version": VERSION,
        "checkpoint": CHECKPOINT,
        "loras": [asdict(lora) for lora in SAMPLE_LORAS],
        "files": {str(p.relative_to(folder)): p.stat().st_size for p in [checkpoint, *_lora_paths(folder)]},
        "build_seconds": timings,
    }
    _write_atomic(manifest_path, json.dumps(manifest, indent=2).encode())
    return manifest


def _lora_paths(folder: Path) -> list[Path]:
    return [folder / "loras" / lora.name for lora in SAMPLE_LORAS]


def _read_manifest(path: Path) -> dict | None:
    """The manifest when every file it lists is present with its size; None means build (again)."""
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if manifest.get("version") != VERSION:
        return None
    for name, size in manifest.get("files", {}).items():
        file = path.parent / name
        if not file.is_file() or file.stat().st_size != size:
            return None
    return manifest


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        f.write(data)
    os.replace(f.name, path)


def _save_tensors_atomic(path: Path, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = _partial(path)
    save_file(tensors, str(temporary), metadata=metadata)
    os.replace(temporary, path)


def _partial(path: Path) -> Path:
    """A temporary name next to `path` (same file system, so the final rename is atomic); it keeps the suffix."""
    return path.with_name(f".{path.stem}.{os.getpid()}.partial{path.suffix}")


def init_like_training(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Seeded weights with the scale of an initialised network: N(0, 1/fan_in) matrices, unit norms, zero biases.

    Sized this way every layer keeps its activations near unit scale, so sampling stays finite and the
    LoRAs' changes are visible in the pictures.
    """
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in module.named_parameters():
            if name.endswith("bias"):
                parameter.zero_()
            elif parameter.dim() == 0:
                parameter.fill_(4.6052)  # CLIP's logit_scale, log(100)
            elif parameter.dim() == 1:
                parameter.fill_(1.0)
            else:
                parameter.normal_(0.0, parameter[0].numel() ** -0.5, generator=generator)  # std 1/sqrt(fan_in)
    return module


def save_checkpoint(path: Path, seed: int) -> None:
    """A single-file SD1 checkpoint in fp16 from the host's own UNet, CLIP-L and VAE classes."""
    import comfy.ldm.models.autoencoder
    import comfy.sd1_clip
    import comfy.supported_models

    tensors: dict[str, torch.Tensor] = {}

    def add(prefix: str, state: dict[str, torch.Tensor]) -> None:
        tensors.update({prefix + k: v.detach().to(torch.float16).contiguous() for k, v in state.items()})

    model_config = comfy.supported_models.SD15(dict(UNET_CONFIG))
    model_config.set_inference_dtype(torch.float32, None)
    unet = model_config.get_model({}).diffusion_model
    add("model.diffusion_model.", init_like_training(unet, seed).state_dict())
    del unet
    text = comfy.sd1_clip.SDClipModel(dtype=torch.float32)  # the host's fixed CLIP-L configuration
    add("cond_stage_model.transformer.", init_like_training(text.transformer, seed + 1).state_dict())
    del text
    vae = comfy.ldm.models.autoencoder.AutoencoderKL(ddconfig=VAE_CONFIG, embed_dim=4)
    add("first_stage_model.", init_like_training(vae, seed + 2).state_dict())
    del vae
    _save_tensors_atomic(path, tensors, {"modelspec.title": "LoRA Deck demo SD1 (random weights)",
                                         "modelspec.architecture": "stable-diffusion-v1"})


def _empty(build):
    """A model with the real structure and uninitialised weights: LoRA producers only need its shapes."""
    from accelerate import init_empty_weights

    with init_empty_weights():
        model = build()
    return model.to_empty(device="cpu").eval()


def diffusers_unet():
    from diffusers import UNet2DConditionModel

    return _empty(lambda: UNet2DConditionModel(**DIFFUSERS_UNET))


def clip_text_model():
    from transformers import CLIPTextConfig, CLIPTextModel

    return _empty(lambda: CLIPTextModel(CLIPTextConfig(**CLIP_L)))


def _kohya(path: str, lora: SampleLora, seed: int) -> None:
    unet = producers.attach_lora(diffusers_unet(), ATTENTION, rank=lora.rank, alpha=lora.alpha, seed=seed)
    text = producers.attach_lora(clip_text_model(), producers.TEXT_TARGETS, rank=lora.rank, alpha=lora.alpha,
                                 seed=seed + 50)
    producers.save_kohya_sd15(path, unet, text)


def _peft(path: str, lora: SampleLora, seed: int) -> None:
    unet = producers.attach_lora(diffusers_unet(), producers.UNET_TARGETS, rank=lora.rank, alpha=lora.alpha,
                                 seed=seed)
    text = producers.attach_lora(clip_text_model(), ["q_proj", "v_proj"], rank=lora.rank, alpha=lora.alpha,
                                 seed=seed + 50)
    producers.save_peft_sd15(path, unet, text)


def _lycoris(path: str, lora: SampleLora, seed: int) -> None:
    """A LoCon over the UNet's attention, resnet and resampling layers, as lycoris-lora's "full" preset picks them."""
    from lycoris import LycorisNetwork, create_lycoris

    unet = diffusers_unet()
    defaults = {k: getattr(LycorisNetwork, k) for k in ("TARGET_REPLACE_MODULE", "TARGET_REPLACE_NAME", "ENABLE_CONV")}
    try:
        LycorisNetwork.apply_preset({"enable_conv": True, "target_module": [
            "Transformer2DModel", "ResnetBlock2D", "Downsample2D", "Upsample2D"], "target_name": []})
        network = create_lycoris(unet, 1.0, linear_dim=lora.rank, linear_alpha=lora.alpha, conv_dim=lora.rank,
                                 conv_alpha=lora.alpha, algo="locon")
    finally:
        for key, value in defaults.items():
            setattr(LycorisNetwork, key, value)
    network.apply_to()  # registers the modules, as a trainer does before its first step
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # "trained": lycoris initialises lora_up to zero
        for name, parameter in network.named_parameters():
            if "lora_up" in name or "lora_down" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1)
    network.save_weights(path, torch.float16, {"software": "lycoris-lora create_lycoris", "algo": "locon"})


_BUILDERS = (_kohya, _peft, _lycoris)


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "demo-output" / "models"
    print(json.dumps(ensure(target), indent=2))
