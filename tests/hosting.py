"""The real ComfyUI host, in-process, for tests, demos and benchmarks.

`boot()` imports the host from COMFYUI_PATH on the CPU, points its loras folder at a folder of ours,
loads the built-in nodes and this pack through the host's own custom-node loader, and returns the pack's
module. The `mini_*` builders make structurally faithful miniature models from the host's own classes:
real levels, blocks and transformer depths, tiny widths, every parameter filled from a seeded generator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import importlib
import logging
import os
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
COMFYUI_PATH = Path(os.environ.get("COMFYUI_PATH") or REPO / ".host" / "ComfyUI").resolve()
_state: dict[str, object] = {}


def boot(loras_dir: str | os.PathLike | None = None, builtin_nodes: bool = True, cpu: bool = True):
    """Import and initialise the host once per process; return this pack's module as the host loaded it.

    `cpu=False` lets the host pick its accelerator (benchmarks on a GPU machine).
    """
    if "pack" not in _state:
        if not (COMFYUI_PATH / "comfy").is_dir():
            raise RuntimeError(f"No ComfyUI at {COMFYUI_PATH}: run `make setup` or set COMFYUI_PATH")
        sys.path.insert(0, str(COMFYUI_PATH))
        import comfy.options

        comfy.options.enable_args_parsing(False)
        import comfy.cli_args

        comfy.cli_args.args.cpu = cpu
        import comfy.model_management  # (reads args.cpu at import)

        # As in the host's main.py: the root `utils` package first, before nodes.py puts comfy/ on sys.path
        # (where comfy/utils.py would shadow it and break built-in nodes such as nodes_images).
        import utils.install_util  # noqa: F401

        import nodes

        logging.getLogger().setLevel(logging.WARNING)
        if builtin_nodes:
            asyncio.run(nodes.init_extra_nodes(init_custom_nodes=False, init_api_nodes=False))
        if not asyncio.run(nodes.load_custom_node(str(REPO))):
            raise RuntimeError("the host failed to load LoRA Deck; see the log above")
        _state["pack"] = sys.modules[str(REPO).replace(".", "_x_")]
    if loras_dir is not None:
        set_loras_dir(loras_dir)
    return _state["pack"]


def host_version() -> str:
    """The version of the host at COMFYUI_PATH, as its own comfyui_version.py states it."""
    text = (COMFYUI_PATH / "comfyui_version.py").read_text()
    return text.split("__version__", 1)[1].split('"')[1]


def set_loras_dir(*dirs: str | os.PathLike) -> None:
    import folder_paths

    _, extensions = folder_paths.folder_names_and_paths["loras"]
    folder_paths.folder_names_and_paths["loras"] = ([str(d) for d in dirs], extensions)
    folder_paths.filename_list_cache.pop("loras", None)


def fill_(module: torch.nn.Module, seed: int, scale: float = 0.05) -> torch.nn.Module:
    """Fill every parameter and buffer of floating type from a seeded generator (the host's ops leave them empty)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * scale)
    return module


SD15_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "adm_in_channels": None, "in_channels": 4, "model_channels": 32, "num_res_blocks": [2, 2, 2, 2],
    "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1,
    "use_linear_in_transformer": False, "context_dim": 64, "num_heads": 8,
    "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

SDXL_UNET = {
    "use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True, "legacy": False,
    "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4, "model_channels": 32,
    "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4],
    "transformer_depth_middle": 10, "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
    "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
    "use_temporal_attention": False, "use_temporal_resblock": False,
}

# Flux: hidden 64 (4 heads of 16 = rope axes 4+6+6), 2 double / 3 single blocks, guidance embedder.
FLUX_DIT = {
    "image_model": "flux", "axes_dim": [4, 6, 6], "num_heads": 4, "mlp_ratio": 4.0, "theta": 10000,
    "out_channels": 16, "qkv_bias": True, "in_channels": 16, "hidden_size": 64, "context_in_dim": 32,
    "patch_size": 2, "vec_in_dim": 32, "depth": 2, "depth_single_blocks": 3, "guidance_embed": True,
}

# SD3.5-Medium layout: hidden = 64 · depth (2 joint blocks, 128 wide), attn2 in block 0, pooled 64, context 64.
SD3_DIT = {
    "in_channels": 16, "patch_size": 2, "out_channels": 16, "depth": 2, "input_size": None, "adm_in_channels": 64,
    "context_embedder_config": {"target": "torch.nn.Linear", "params": {"in_features": 64, "out_features": 128}},
    "num_patches": 64, "pos_embed_max_size": 8, "pos_embed_scaling_factor": None, "x_block_self_attn_layers": [0],
}

TINY_CLIP_TEXT = {
    "architectures": ["CLIPTextModel"], "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0,
    "eos_token_id": 49407, "hidden_act": "quick_gelu", "hidden_size": 64, "initializer_factor": 1.0,
    "initializer_range": 0.02, "intermediate_size": 128, "layer_norm_eps": 1e-05, "max_position_embeddings": 77,
    "model_type": "clip_text_model", "num_attention_heads": 4, "num_hidden_layers": 12, "pad_token_id": 1,
    "projection_dim": 64, "torch_dtype": "float32", "vocab_size": 49408,
}


# The dataclass a transformer family's config fills: newer hosts add required fields to some of them.
_PARAMS = {"Flux": "comfy.ldm.flux.model.FluxParams",
           "HunyuanVideo": "comfy.ldm.hunyuan_video.model.HunyuanVideoParams"}
# Fields that hosts after 0.3.75 require, with the value their own detector gives the classic model
# (0.8.0's model_detection: classic Flux txt_ids_dims [], HunyuanVideo meanflow_sum False).
_CLASSIC_VALUES = {"txt_ids_dims": [], "meanflow_sum": False}


def for_live_host(family: str, config: dict) -> dict:
    """`config` plus every field the live host's parameter dataclass of `family` requires that it lacks."""
    if family not in _PARAMS:
        return config
    module, name = _PARAMS[family].rsplit(".", 1)
    fields = dataclasses.fields(getattr(importlib.import_module(module), name))
    required = {f.name for f in fields if f.default is dataclasses.MISSING
                and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - config.keys())
    unknown = [field for field in missing if field not in _CLASSIC_VALUES]
    if unknown:
        raise RuntimeError(f"ComfyUI {host_version()}'s {name} requires {unknown}: add the classic model's "
                           "values to hosting._CLASSIC_VALUES")
    return {**config, **{field: _CLASSIC_VALUES[field] for field in missing}}


def _patcher(model: torch.nn.Module):
    import comfy.model_patcher

    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)


def mini_model(family: str = "SD15", seed: int = 0, unet_config: dict | None = None):
    """A ModelPatcher around a miniature diffusion model of the host's class `family` (SD15, SDXL, …)."""
    import comfy.supported_models

    config = for_live_host(family, unet_config or {"SD15": SD15_UNET, "SDXL": SDXL_UNET, "Flux": FLUX_DIT,
                                                   "SD3": SD3_DIT}[family])
    model_config = getattr(comfy.supported_models, family)(config)
    model_config.set_inference_dtype(torch.float32, None)
    model = model_config.get_model({})
    return _patcher(fill_(model, seed))


def mini_clip_sd1(seed: int = 1, text_config: dict | None = None):
    """A comfy.sd.CLIP with the SD1 text encoder's structure (12 layers, CLIP-L key names), 64 wide."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base

    encoder = functools.partial(comfy.sd1_clip.SDClipModel, textmodel_json_config=text_config or TINY_CLIP_TEXT)
    target = comfy.supported_models_base.ClipTarget(
        comfy.sd1_clip.SD1Tokenizer, functools.partial(comfy.sd1_clip.SD1ClipModel, clip_model=encoder))
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    fill_(clip.cond_stage_model, seed)
    return clip


TINY_CLIP_G_TEXT = {**TINY_CLIP_TEXT, "hidden_size": 80, "intermediate_size": 160, "num_attention_heads": 4,
                    "num_hidden_layers": 4, "projection_dim": 80, "hidden_act": "gelu"}


def mini_clip_sdxl(seed: int = 2):
    """A comfy.sd.CLIP with SDXL's two text encoders (clip_l 12 layers, 64 wide; clip_g 4 layers, 80 wide)."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.sdxl_clip
    import comfy.supported_models_base

    class MiniSDXLClipModel(comfy.sdxl_clip.SDXLClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (the host's signature)
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(
                layer="hidden", layer_idx=-2, device=device, dtype=dtype, layer_norm_hidden_state=False,
                textmodel_json_config=TINY_CLIP_TEXT)
            self.clip_g = comfy.sd1_clip.SDClipModel(
                layer="hidden", layer_idx=-2, device=device, dtype=dtype, textmodel_json_config=TINY_CLIP_G_TEXT,
                special_tokens={"start": 49406, "end": 49407, "pad": 0}, layer_norm_hidden_state=False,
                return_projected_pooled=True, model_options={"model_name": "clip_g"})
            self.dtypes = {dtype}

    target = comfy.supported_models_base.ClipTarget(comfy.sdxl_clip.SDXLTokenizer, MiniSDXLClipModel)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    fill_(clip.cond_stage_model, seed)
    return clip


TINY_T5 = {"d_ff": 64, "d_kv": 8, "d_model": 32, "num_heads": 4, "num_layers": 2, "vocab_size": 32128,
           "dense_act_fn": "gelu_pytorch_tanh", "is_gated_act": True, "layer_norm_epsilon": 1e-06,
           "relative_attention_num_buckets": 32, "model_type": "t5"}


def mini_clip_flux(seed: int = 3):
    """A comfy.sd.CLIP with Flux's text encoders: clip_l (12 layers, 64 wide) and t5xxl (2 blocks, 32 wide)."""
    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import comfy.text_encoders.flux
    import comfy.text_encoders.t5

    class MiniFluxClipModel(comfy.text_encoders.flux.FluxClipModel):
        def __init__(self, device="cpu", dtype=None, model_options={}):  # noqa: B006 (the host's signature)
            torch.nn.Module.__init__(self)
            self.clip_l = comfy.sd1_clip.SDClipModel(device=device, dtype=dtype, return_projected_pooled=False,
                                                     textmodel_json_config=TINY_CLIP_TEXT)
            self.t5xxl = comfy.sd1_clip.SDClipModel(
                device=device, dtype=dtype, textmodel_json_config=TINY_T5, special_tokens={"end": 1, "pad": 0},
                model_class=comfy.text_encoders.t5.T5, model_options={"model_name": "t5xxl"})
            self.dtypes = {dtype}

    target = comfy.supported_models_base.ClipTarget(comfy.text_encoders.flux.FluxTokenizer, MiniFluxClipModel)
    clip = comfy.sd.CLIP(target, model_options={"dtype": torch.float32})
    fill_(clip.cond_stage_model, seed)
    return clip


def patched_state_dict(patcher) -> dict[str, torch.Tensor]:
    """Every weight as the host computes it with the patcher's patches applied (its own calculate_weight)."""
    import comfy.lora

    base = patcher.model.state_dict()
    out = {}
    for key, weight in base.items():
        patches = patcher.patches.get(key)
        if not patches:
            out[key] = weight.detach().clone()
            continue
        out[key] = comfy.lora.calculate_weight(patches, weight.detach().to(torch.float32).clone(), key)
    return out


class _ServerStub:
    """What the host's executor needs of a server when no server runs: it records the messages."""

    def __init__(self):
        self.client_id = None
        self.last_node_id = None
        self.last_prompt_id = None
        self.sockets_metadata: dict = {}
        self.messages: list[tuple[str, object]] = []

    def send_sync(self, event, data, sid=None):
        self.messages.append((event, data))

    def queue_updated(self):
        pass


class PromptFailed(AssertionError):
    pass


# No output-cache limits, as the server's defaults; newer hosts than 0.8.0 also read "ram_inactive".
CACHE_ARGS = {"lru": 0, "ram": 0, "ram_inactive": 0}


class Executor:
    """The host's own PromptExecutor, kept across runs so its output cache behaves as in the real server."""

    def __init__(self):
        import execution

        self.server = _ServerStub()
        self.executor = execution.PromptExecutor(
            self.server, cache_type=execution.CacheType.CLASSIC, cache_args=CACHE_ARGS)
        self.runs = 0

    def outcome(self, prompt: dict) -> tuple[str, object]:
        """("ok", outputs), ("invalid", {node id: [error, …]}) or ("failed", the host's execution_error message)."""
        import execution

        self.runs += 1
        prompt_id = f"test-{self.runs}"
        valid = asyncio.run(execution.validate_prompt(prompt_id, prompt, None))
        if not valid[0]:
            return "invalid", {node: info["errors"] for node, info in valid[3].items()} or {"prompt": [valid[1]]}
        self.server.messages.clear()
        self.executor.execute(prompt, prompt_id, extra_data={"client_id": "tests"}, execute_outputs=valid[2])
        if not self.executor.success:
            return "failed", next(data for event, data in self.executor.status_messages if event == "execution_error")
        return "ok", self.executor.history_result["outputs"]

    def run(self, prompt: dict) -> dict:
        """Validate and execute an API-format prompt; return the history outputs or raise with the host's errors."""
        status, result = self.outcome(prompt)
        if status != "ok":
            raise PromptFailed(f"{status} prompt: {result}")
        return result

    def executed_nodes(self) -> list[str]:
        return [data["node"] for event, data in self.server.messages if event == "executing" and data.get("node")]
