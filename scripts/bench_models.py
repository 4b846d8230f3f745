"""The benchmarks' shared parts: the host booted for a benchmark (with inert stand-ins for host imports a
bare machine lacks), full-size UNets of the host's own classes, kohya LoRA files of rank 32, and the process
measurements. scripts/bench.py, bench_bake.py and bench_schedule.py use them."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import resource
import sys
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # hosting: the real host, booted in-process

RANK = 32
ALPHA = 16.0
STRENGTHS = [0.9, -0.6, 0.75, 0.5, -0.8, 1.1, 0.3, -0.4, 0.65, 0.55, -0.7, 0.85, 0.45, -0.35, 0.6, 0.95]
STRENGTH_STEP = 0.25
ARCHS = {"sd15": "SD15", "sdxl": "SDXL"}
# Host imports that the benchmark never exercises (tokenizers, image/video I/O, samplers): when a bare
# machine lacks them they are replaced by inert stand-ins so the host's modules import.
STUBBABLE = ("transformers", "tokenizers", "PIL", "av", "scipy", "torchsde", "trampoline", "torchvision",
             "huggingface_hub", "regex", "sentencepiece", "einops", "tqdm", "yaml", "aiohttp", "spandrel",
             "kornia", "comfy_aimdo")


# ---------------------------------------------------------------------------------------------------- host


class _Inert(type):
    """A class that is also every attribute of itself: subclassable, callable, comparable; does nothing."""

    def __getattr__(cls, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return cls

    def __call__(cls, *args, **kwargs):
        return cls

    def __iter__(cls):
        return iter(())

    def __bool__(cls):
        return False

    def __or__(cls, other):
        return cls

    __ror__ = __or__


class _InertModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return _Inert(name, (), {})


class _InertFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def __init__(self, names):
        self.names = set(names)

    def find_spec(self, fullname, path, target=None):
        if fullname.split(".")[0] in self.names:
            return importlib.machinery.ModuleSpec(fullname, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _InertModule(spec.name)
        module.__path__ = []
        module.__version__ = "0.0.0"
        return module

    def exec_module(self, module):
        pass


def stub_missing(forced: list[str]) -> list[str]:
    """Inert stand-ins for the unexercised host imports this Python lacks (or that are forced); returns them."""
    import importlib.util

    missing = [n for n in STUBBABLE if n in forced or importlib.util.find_spec(n) is None]
    if missing:
        finder = _InertFinder(missing)
        sys.meta_path.insert(0, finder) if forced else sys.meta_path.append(finder)
    return missing


def boot(device: str, loras_dir: str, forced_stubs: list[str], threads: int = 0):
    stubbed = stub_missing(forced_stubs)
    import hosting
    import torch

    if threads:
        torch.set_num_threads(threads)

    pack = hosting.boot(loras_dir, builtin_nodes=False, cpu=(device == "cpu"))
    return pack, stubbed


def sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def build_model(arch: str, device: str, meta: bool = False):
    """A ModelPatcher around a full-size UNet of the host's class for `arch`, filled from a seeded generator."""
    import comfy.model_management
    import comfy.model_patcher
    import comfy.supported_models
    import hosting
    import torch

    config = dict({"sd15": hosting.SD15_UNET, "sdxl": hosting.SDXL_UNET}[arch])
    config.update(model_channels=320, image_size=64)
    if arch == "sd15":
        config.update(context_dim=768)
    model_config = getattr(comfy.supported_models, ARCHS[arch])(config)
    if meta:
        model_config.set_inference_dtype(torch.float32, None)
        return model_config.get_model({}, device=torch.device("meta"))
    load_device = comfy.model_management.get_torch_device()
    dtype = comfy.model_management.unet_dtype(load_device, model_params=10**9,
                                              supported_dtypes=model_config.supported_inference_dtypes)
    model_config.set_inference_dtype(dtype, comfy.model_management.unet_manual_cast(dtype, load_device))
    model = model_config.get_model({})
    # Values from one seeded pool, tiled: random enough for timing, and filling a 2.6B-parameter SDXL UNet
    # costs memory copies instead of minutes of single-threaded sampling.
    pool = torch.randn(1 << 22, generator=torch.Generator().manual_seed(0)) * 0.02
    offset = 0
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                flat = tensor.view(-1)
                for start in range(0, flat.numel(), pool.numel()):
                    chunk = flat[start: start + pool.numel()]
                    shift = offset % (pool.numel() - chunk.numel() + 1)
                    chunk.copy_(pool[shift: shift + chunk.numel()])
                    offset += 7919
    return comfy.model_patcher.ModelPatcher(model, load_device=load_device,
                                            offload_device=comfy.model_management.unet_offload_device())


def kohya_modules(model) -> dict[str, tuple[str, tuple[int, ...]]]:
    """kohya module name -> (model key, weight shape) for what kohya's standard LoRA trains: every Linear and
    1×1 conv of the transformer blocks (attention, feed-forward, proj_in/out)."""
    import comfy.lora

    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    out = {}
    for lora_key, model_key in comfy.lora.model_lora_keys_unet(model, {}).items():
        if not (isinstance(model_key, str) and lora_key.startswith("lora_unet_") and "_attentions_" in lora_key):
            continue
        shape = shapes[model_key]
        if len(shape) == 2 or (len(shape) == 4 and shape[2:] == (1, 1)):
            out[lora_key] = (model_key, shape)
    return out


# Text encoders as kohya names them: (prefix, layers, hidden width, MLP width). Files carry their modules
# as kohya writes them; the benchmark patches the UNet only (no CLIP connected), as a model-only chain does.
TEXT_ENCODERS = {"sd15": [("lora_te", 12, 768, 3072)],
                 "sdxl": [("lora_te1", 12, 768, 3072), ("lora_te2", 32, 1280, 5120)]}


def text_encoder_modules(arch: str) -> dict[str, tuple[int, int]]:
    modules = {}
    for prefix, layers, hidden, mlp in TEXT_ENCODERS[arch]:
        for layer in range(layers):
            stem = f"{prefix}_text_model_encoder_layers_{layer}_"
            for projection in ("q_proj", "k_proj", "v_proj", "out_proj"):
                modules[f"{stem}self_attn_{projection}"] = (hidden, hidden)
            modules[f"{stem}mlp_fc1"] = (mlp, hidden)
            modules[f"{stem}mlp_fc2"] = (hidden, mlp)
    return modules


def lora_names(arch: str, count: int | None = None) -> list[str]:
    return [f"bench_{arch}_r{RANK}_te_{i:02d}.safetensors" for i in range(16 if count is None else count)]


def write_loras(arch: str, count: int, folder: Path) -> list[str]:
    """`count` kohya files of rank 32 from random factors (fp16, alpha 16), written once per folder."""
    import torch
    from safetensors.torch import save_file

    names = lora_names(arch, count)
    if all((folder / n).exists() for n in names):
        return names
    shapes = {key: shape for key, (_, shape) in kohya_modules(build_model(arch, "cpu", meta=True)).items()}
    shapes.update(text_encoder_modules(arch))
    for i, name in enumerate(names):
        if (folder / name).exists():
            continue
        generator = torch.Generator().manual_seed(1000 + i)
        tensors = {}
        for lora_key, shape in shapes.items():
            out_features, in_features = shape[0], shape[1]
            extra = (1, 1) if len(shape) == 4 else ()
            down = torch.randn(RANK, in_features, *extra, generator=generator) / in_features**0.5
            up = torch.randn(out_features, RANK, *extra, generator=generator) * 0.01
            tensors[f"{lora_key}.lora_down.weight"] = down.to(torch.float16)
            tensors[f"{lora_key}.lora_up.weight"] = up.to(torch.float16)
            tensors[f"{lora_key}.alpha"] = torch.tensor(ALPHA, dtype=torch.float16)
        temp = folder / f".{name}.tmp"
        save_file(tensors, str(temp), metadata={"ss_network_dim": str(RANK), "ss_network_alpha": str(ALPHA)})
        temp.replace(folder / name)
    return names


# ---------------------------------------------------------------------------------------------- process


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def cpu_seconds() -> float:
    """CPU time of this process, all threads (user + system): what the work cost, whatever else ran."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def gib(n: float) -> str:
    return f"{n / 2**30:.2f}"
