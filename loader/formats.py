"""Which LoRA layout a file uses, read from its tensor names and shapes alone (no tensor data).

A file is split into modules: one adapted layer each, named as the file names it (the "module key",
which is what the host's key maps call a LoRA prefix), with the role of each of its tensors.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field

from .files import Header, LoraFileError

# (suffix, adapter kind or None when the tensor belongs to any kind, role). Longest suffixes first.
SUFFIXES: tuple[tuple[str, str | None, str], ...] = (
    (".lora_linear_layer.down.weight", "lora", "down"),
    (".lora_linear_layer.up.weight", "lora", "up"),
    (".lora_A.default.weight", "lora", "down"),
    (".lora_B.default.weight", "lora", "up"),
    (".lora_down.weight", "lora", "down"),
    (".lora_up.weight", "lora", "up"),
    (".lora_mid.weight", "lora", "mid"),
    (".lora.down.weight", "lora", "down"),
    (".lora.up.weight", "lora", "up"),
    ("_lora.down.weight", "lora", "down"),
    ("_lora.up.weight", "lora", "up"),
    (".lora_A.weight", "lora", "down"),
    (".lora_B.weight", "lora", "up"),
    (".lora_B.bias", "lora", "up_bias"),
    (".hada_w1_a", "loha", "w1a"),
    (".hada_w1_b", "loha", "w1b"),
    (".hada_w2_a", "loha", "w2a"),
    (".hada_w2_b", "loha", "w2b"),
    (".hada_t1", "loha", "t1"),
    (".hada_t2", "loha", "t2"),
    (".lokr_w1_a", "lokr", "w1a"),
    (".lokr_w1_b", "lokr", "w1b"),
    (".lokr_w2_a", "lokr", "w2a"),
    (".lokr_w2_b", "lokr", "w2b"),
    (".lokr_w1", "lokr", "w1"),
    (".lokr_w2", "lokr", "w2"),
    (".lokr_t2", "lokr", "t2"),
    (".a1.weight", "glora", "a1"),
    (".a2.weight", "glora", "a2"),
    (".b1.weight", "glora", "b1"),
    (".b2.weight", "glora", "b2"),
    (".bm.weight", "glora", "bm"),
    (".oft_blocks", "oft", "blocks"),
    (".rescale", None, "rescale"),
    (".diff_b", None, "diff_b"),
    (".diff", "full", "diff"),
    (".w_norm", "norm", "w_norm"),
    (".b_norm", None, "b_norm"),
    (".on_input", "ia3", "on_input"),
    (".lora_magnitude_vector", None, "magnitude"),
    (".magnitude", None, "magnitude"),  # ai-toolkit's PEFT-convention DoRA
    (".dora_scale", None, "dora_scale"),
    (".alpha", None, "alpha"),
)

# XLabs (x-flux) names its LoRA layers inside attention processors: `double_blocks.0.processor.qkv_lora1.down.weight`.
_XLABS = re.compile(r"^(.*\.processor\.(?:qkv|proj)_lora[12]?)\.(down|up)\.weight$")

# Which kind wins when a module's tensors name several (LyCORIS' and the host's detection order).
KIND_ORDER = ("loha", "lokr", "oft", "glora", "full", "norm", "ia3", "lora", "bias")
REQUIRED = {
    "lora": ({"up", "down"},),
    "loha": ({"w1a", "w1b", "w2a", "w2b"},),
    "lokr": ({"w1", "w2"}, {"w1", "w2a", "w2b"}, {"w1a", "w1b", "w2"}, {"w1a", "w1b", "w2a", "w2b"}),
    "glora": ({"a1", "a2", "b1", "b2"},),
    "oft": ({"blocks"},),
    "full": ({"diff"},),
    "norm": ({"w_norm"},),
    "ia3": ({"ia3", "on_input"},),
    "bias": ({"diff_b"},),
}

FAMILY_PREFIXES: tuple[tuple[str, str], ...] = (
    ("lora_unet_", "kohya"),
    ("lora_te", "kohya"),
    ("lora_prior_", "kohya"),
    ("oft_unet_", "kohya"),
    ("lycoris_", "lycoris"),
    ("lora_transformer_", "onetrainer"),
    ("diffusion_model.", "comfyui"),
    ("text_encoders.", "comfyui"),
    ("base_model.model.", "peft"),
    ("unet.", "peft"),
    ("text_encoder", "peft"),
    ("transformer.", "peft"),
)
_OLD_DIFFUSERS_ROLES = (".lora.down.weight", ".lora.up.weight", ".lora_linear_layer.", "_lora.down.weight",
                        "_lora.up.weight")


@dataclass(frozen=True)
class Module:
    key: str
    kind: str
    parts: dict[str, str]  # role -> tensor name

    @property
    def is_text_encoder(self) -> bool:
        return bool(re.match(r"^(lora_te\d?_|lora_prior_te_|text_encoder|text_encoders\.)", self.key))


@dataclass(frozen=True)
class Layout:
    """What a LoRA file holds, as far as its header tells."""

    family: str
    modules: dict[str, Module]
    unused: tuple[str, ...]  # tensors that belong to no module this version understands
    base: str | None  # base architecture: sd1, sd2, sdxl, sd3, flux, … or None when unknown
    adapter_kinds: tuple[str, ...]
    ranks: tuple[int, ...]
    metadata: dict[str, str] = field(default_factory=dict)
    text_encoders: tuple[str, ...] = ()

    @property
    def has_text_encoder(self) -> bool:
        return any(m.is_text_encoder for m in self.modules.values())

    def problem(self) -> str | None:
        """Why this file cannot be used as a LoRA at all, or None when it can."""
        if self.modules:
            return None
        if not self.unused:
            return "holds no tensors"
        return (f"has no adapter this version understands ({len(self.unused)} tensors in an unknown layout, "
                f"e.g. {self.unused[0]!r})")


def split_name(name: str) -> tuple[str, str | None, str] | None:
    """(module key, kind, role) of a tensor name, or None when the name is not an adapter tensor."""
    xlabs = _XLABS.match(name)
    if xlabs:
        return xlabs.group(1), "lora", xlabs.group(2)
    for suffix, kind, role in SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], kind, role
    return None


def describe(header: Header) -> Layout:
    grouped: dict[str, dict[str, str]] = {}
    kinds: dict[str, set[str]] = {}
    unused: list[str] = []
    for name in header.tensors:
        split = split_name(name)
        if split is None and name.endswith(".weight") and name[: -len(".weight")] + ".on_input" in header.tensors:
            split = (name[: -len(".weight")], "ia3", "ia3")  # IA³ keeps its vector as `<module>.weight`
        if split is None:
            unused.append(name)
            continue
        key, kind, role = split
        key = _kohya_key(key)
        parts = grouped.setdefault(key, {})
        if role in parts:  # e.g. lora_down and lora_A for one layer: which one the author meant is unknowable
            first, second = sorted((parts[role], name))
            raise LoraFileError(header.path, f"module {key!r} is given twice: {first!r} and {second!r}")
        parts[role] = name
        if kind is not None:
            kinds.setdefault(key, set()).add(kind)
    modules: dict[str, Module] = {}
    for key, parts in grouped.items():
        kind = _kind_of(kinds.get(key, set()), parts)
        if kind is None:
            unused.extend(parts.values())
            continue
        if kind == "oft" and len(header.tensors[parts["blocks"]].shape) == 4:
            kind = "boft"  # butterfly: one set of blocks per stage
        modules[key] = Module(key, kind, parts)
        if kind == "lora":
            _check_lora_shapes(header, modules[key])
    return Layout(
        family=_family(modules),
        modules=modules,
        unused=tuple(sorted(unused)),
        base=detect_base(header, modules),
        adapter_kinds=tuple(sorted({m.kind + ("+dora" if _is_dora(m) else "") for m in modules.values()})),
        ranks=tuple(sorted({r for m in modules.values() if (r := module_rank(header, m)) is not None})),
        metadata=dict(header.metadata),
        text_encoders=text_encoder_parts(header, modules),
    )


_UNDERSCORE_FAMILIES = ("lora_unet_", "lora_te", "lora_prior_", "lycoris_", "lora_transformer_", "oft_unet_")


def _kohya_key(key: str) -> str:
    """kohya-style ids join the model path with `_`; some tools leave dots in them (diffusers' kohya converter
    on DoRA magnitudes: `lora_unet_…_attn1.to_q.lora_magnitude_vector`; `lora_te1.text_model.…`)."""
    return key.replace(".", "_") if "." in key and key.startswith(_UNDERSCORE_FAMILIES) else key


def _kind_of(kinds: set[str], parts: dict[str, str]) -> str | None:
    if not kinds and "diff_b" in parts:
        kinds = {"bias"}
    for kind in KIND_ORDER:
        if kind in kinds and any(need <= parts.keys() for need in REQUIRED[kind]):
            return kind
    return None


def glora_old_layout(a1: tuple, a2: tuple, b1: tuple, b2: tuple, weight: tuple | None = None) -> bool:
    """True for GLoRA factors in LyCORIS' old order (a1 [r, in], a2 [in, r], b1 [r, in], b2 [out, r]), told from
    shapes as the host's `old_glora` does; when both orders fit (square factors), the weight's shape decides
    and the old order wins when the weight is square with a2's first size (without a weight: the old order)."""
    old = b2[1] == b1[0] == a1[0] == a2[1]
    new = b2[0] == b1[1] == a1[1] == a2[0]
    if not (old and new):
        return old
    return weight is None or (len(weight) >= 2 and weight[0] == weight[1] == a2[0])


def module_rank(header: Header, module: Module) -> int | None:
    """The rank a module's alpha divides by, from shapes alone."""
    if module.kind == "glora" and "bm" not in module.parts:
        shapes = [header.tensors[module.parts[r]].shape for r in ("a1", "a2", "b1", "b2")]
        if all(len(s) >= 2 for s in shapes):
            return shapes[0][0] if glora_old_layout(*shapes) else shapes[1][0]
    role = {"lora": "down", "loha": "w1b", "glora": "a2"}.get(module.kind)
    if module.kind == "lokr":
        role = "w1b" if "w1b" in module.parts else "w2b" if "w2b" in module.parts else None
    if role is None or role not in module.parts:
        return None
    shape = header.tensors[module.parts[role]].shape
    return shape[0] if shape else None  # a scalar factor has no rank (its adapter is refused when built)


def _check_lora_shapes(header: Header, module: Module) -> None:
    """Refuse, naming the module, shapes from which no weight change can be computed."""
    shape = {role: header.tensors[name].shape for role, name in module.parts.items()}
    down, up, mid = shape["down"], shape["up"], shape.get("mid")
    problem = None
    if not 2 <= len(down) <= 5 or not 2 <= len(up) <= 5:
        problem = f"up {list(up)} and down {list(down)} must be matrices or conv kernels"
    elif down[0] == 0 or 0 in up or 0 in down:
        problem = f"up {list(up)} and down {list(down)} have an empty dimension"
    elif mid is None and up[1] != down[0]:
        problem = f"up {list(up)} and down {list(down)} disagree on the rank"
    elif mid is not None and (len(mid) < 2 or mid[0] != up[1] or mid[1] != down[0]):
        problem = f"mid {list(mid)} does not sit between up {list(up)} and down {list(down)}"
    elif "alpha" in shape and _numel(shape["alpha"]) != 1:
        problem = f"alpha has shape {list(shape['alpha'])}, not a single number"
    else:
        for role in ("magnitude", "dora_scale"):
            if role in shape and _numel(shape[role]) not in (up[0], down[1]):
                problem = f"{role} {list(shape[role])} fits neither the output {up[0]} nor the input {down[1]}"
    if problem:
        raise LoraFileError(header.path, f"module {module.key!r}: {problem}")


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for d in shape:
        count *= d
    return count


def _is_dora(module: Module) -> bool:
    return "dora_scale" in module.parts or "magnitude" in module.parts


def family_of(module: Module) -> str:
    if ".processor." in module.key and module.key.rsplit(".", 1)[-1].startswith(("qkv_lora", "proj_lora")):
        return "xlabs"
    if any(name.endswith(_OLD_DIFFUSERS_ROLES) or "_lora.down" in name for name in module.parts.values()):
        return "diffusers-old"
    return next((family for prefix, family in FAMILY_PREFIXES if module.key.startswith(prefix)), "native")


def _family(modules: dict[str, Module]) -> str:
    votes = Counter(family_of(m) for m in modules.values())
    if not votes:
        return "unknown"
    if votes.get("diffusers-old") and votes.get("peft"):
        return "diffusers-old"  # old diffusers files keep lora_A/B on the layers it did not rename
    return votes.most_common(1)[0][0]


def _in_width(header: Header, module: Module) -> int | None:
    role = "down" if "down" in module.parts else None
    if role is None:
        return None
    shape = header.tensors[module.parts[role]].shape
    return shape[1] if len(shape) >= 2 else None


def detect_base(header: Header, modules: dict[str, Module]) -> str | None:
    """The base architecture a LoRA was trained for, from key names and shapes (see research/formats.md §1.6)."""
    keys = " ".join(modules)
    meta = " ".join(header.metadata.get(k, "") for k in ("modelspec.architecture", "ss_base_model_version")).lower()
    if "double_blocks" in keys or "single_transformer_blocks" in keys or "single_blocks" in keys:
        return "chroma" if "chroma" in meta else "flux"
    if "joint_blocks" in keys or ("add_q_proj" in keys and "transformer_blocks" in keys):
        return "sd3"
    if re.search(r"lora_te2_(text_model_)?encoder_layers|text_encoder_2\.|clip_g\.", keys):  # CLIP-G, not T5
        return "sdxl"
    for module in modules.values():
        if re.search(r"attn2[._](processor[._])?to_k$", module.key):
            width = _in_width(header, module)
            base = {768: "sd1", 1024: "sd2", 2048: "sdxl"}.get(width)
            if base:
                return base
    if re.search(r"input_blocks[._]7[._]1[._]transformer_blocks[._]9", keys):
        return "sdxl"
    if not any(not m.is_text_encoder for m in modules.values()):  # a text-encoder-only LoRA: CLIP width
        widths = {_in_width(header, m) for m in modules.values() if re.search(r"(q_proj|mlp_fc1|fc1)$", m.key)}
        for width, base in ((768, "sd1"), (1024, "sd2")):
            if widths == {width}:
                return base
    for token, base in _OTHER_BASES:
        if re.search(token, keys):
            return base
    for needle, base in (("stable-diffusion-v1", "sd1"), ("sd_v1", "sd1"), ("stable-diffusion-v2", "sd2"),
                         ("sd_v2", "sd2"), ("stable-diffusion-xl", "sdxl"), ("sdxl", "sdxl")):
        if needle in meta:
            return base
    return None


# Architectures the detection names by a distinctive token only (no shape rules yet).
_OTHER_BASES: tuple[tuple[str, str], ...] = (
    (r"double_layers|single_layers", "auraflow"),
    (r"(^|[._])blocks[._]\d+[._](cross_attn|self_attn)[._]", "wan"),
    (r"img_mlp|txt_mlp", "qwen-image"),
    (r"(^|[._])layers[._]\d+[._]attention[._]", "lumina2"),
)


def text_encoder_parts(header: Header, modules: dict[str, Module]) -> tuple[str, ...]:
    """Which text encoders a LoRA adapts: clip_l / clip_h / clip_g / t5 when shapes tell, else the file's prefix."""
    parts = set()
    for module in modules.values():
        if not module.is_text_encoder:
            continue
        if re.search(r"encoder[._]block|SelfAttention|DenseReluDense|t5", module.key):
            parts.add("t5")
            continue
        width = _in_width(header, module) if re.search(r"(q_proj|fc1)$", module.key) else None
        name = {768: "clip_l", 1024: "clip_h", 1280: "clip_g"}.get(width)
        if name is None:
            match = re.match(r"^(lora_te\d?|lora_prior_te|text_encoder(?:_\d)?|text_encoders\.\w+)", module.key)
            name = match.group(1) if match else "text_encoder"
        parts.add(name)
    return tuple(sorted(parts))


def peft_alphas(metadata: dict[str, str]) -> dict[str, dict]:
    """PEFT's LoraConfig per component (unet, text_encoder, transformer …) from diffusers' metadata."""
    raw = metadata.get("lora_adapter_metadata")
    if not raw:
        return {}
    try:
        parsed = json.loads(raw)
    except json.JSONDecodeError:
        return {}
    if not isinstance(parsed, dict):
        return {}
    configs: dict[str, dict] = {}
    for name, value in parsed.items():
        component, dot, field_name = name.partition(".")
        if dot and field_name in {"r", "lora_alpha", "use_rslora", "rank_pattern", "alpha_pattern", "use_dora"}:
            configs.setdefault(component, {})[field_name] = value
        elif isinstance(value, dict):
            configs[name] = value
    if "r" in parsed or "lora_alpha" in parsed:
        configs.setdefault("", parsed)
    return configs


# Spellings of one module that the host's key maps may know under another name (tried in order).
_ALIASES: tuple[tuple[re.Pattern, str], ...] = (
    # diffusers/PEFT attention in a UNet: the host only maps the old attention-processor names.
    (re.compile(r"^(unet\..*)\.(to_[qkv])$"), r"\1.processor.\2"),
    (re.compile(r"^(unet\..*)\.to_out\.0$"), r"\1.processor.to_out"),
    # transformers ≥ 5.6 dropped CLIPTextModel's `text_model` wrapper; producers on it write keys without it.
    (re.compile(r"^(text_encoder(?:_2)?)\.encoder\.layers\."), r"\1.text_model.encoder.layers."),
    (re.compile(r"^(lora_te\d?)_encoder_layers_"), r"\1_text_model_encoder_layers_"),
    # Wan Fun files carry a doubled underscore (`lora_unet__blocks_0_…`); the host converts them the same way.
    (re.compile(r"^lora_unet__"), "lora_unet_"),
    # kohya's networks.oft names its modules like LoRA ones, under another prefix.
    (re.compile(r"^oft_unet_"), "lora_unet_"),
    # PEFT's wrapper prefix (SimpleTuner, fal, old reference scripts) in front of a diffusers path.
    (re.compile(r"^(?:transformer\.)?base_model\.model\."), "transformer."),
    (re.compile(r"^unet\.base_model\.model\."), "unet."),
    # XLabs: lora1 is the image stream, lora2 the text stream; single blocks adapt linear1's qkv rows only.
    (re.compile(r"^(double_blocks\.\d+)\.processor\.qkv_lora1$"), r"diffusion_model.\1.img_attn.qkv"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.proj_lora1$"), r"diffusion_model.\1.img_attn.proj"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.qkv_lora2$"), r"diffusion_model.\1.txt_attn.qkv"),
    (re.compile(r"^(double_blocks\.\d+)\.processor\.proj_lora2$"), r"diffusion_model.\1.txt_attn.proj"),
    (re.compile(r"^(single_blocks\.\d+)\.processor\.qkv_lora$"), r"diffusion_model.\1.linear1_qkv"),
    (re.compile(r"^(single_blocks\.\d+)\.processor\.proj_lora$"), r"diffusion_model.\1.linear2"),
    # Native (BFL, DiffSynth, musubi) names without any prefix: the host maps them under `diffusion_model.`.
    (re.compile(r"^(?!diffusion_model\.|lora_|lycoris_|unet\.|text_encoder|transformer\.|base_model\.)(.+)$"),
     r"diffusion_model.\1"),
)


def key_candidates(module_key: str) -> list[str]:
    """The module key itself, then the other spellings under which the host may map the same layer."""
    candidates = [module_key]
    for pattern, replacement in _ALIASES:
        alias = pattern.sub(replacement, module_key)
        if alias != module_key and alias not in candidates:
            candidates.append(alias)
    return candidates
