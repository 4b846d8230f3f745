"""The adapter registry (loader/adapter_types/) is the one list of adapter types, and every type is complete.

Each type owns its tensor names, required roles, building, rank, change and exact norm; nothing else in
loader/, nodes/ or web/ may name the kinds in a list of its own (docs/formats.md, "How to add a format").
"""

import ast
import inspect as pyinspect
import pathlib
import re

import pytest
import torch
from safetensors.torch import save_file

from loader import adapter_types, files, formats

ROOT = pathlib.Path(__file__).resolve().parents[2]
KIND_NAMES = set(adapter_types.KINDS) | {a for t in adapter_types.REGISTRY for a in t.aliases} | {"dora"}
# "lora" is also every JSON field and word that names a LoRA file: alone it is not a list of kinds.
GENERIC = {"lora"}

CLASS_MEMBERS = ("kind", "suffixes", "shared_suffixes", "required", "aliases", "weight_dependent", "accepts",
                 "named_as", "claim_before", "claim_after", "validate", "rank_from_shapes", "build")
ADAPTER_MEMBERS = ("delta", "apply_", "norm", "label", "linear", "needs_weight", "is_dora")


def _python_files():
    for folder in ("loader", "nodes"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            if "adapter_types" not in path.parts:
                yield path


def _kind_constants(tree):
    """(line, kind name) of every string constant naming an adapter kind, and the displays holding two."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in KIND_NAMES - GENERIC:
            found.append((node.lineno, node.value))
        if isinstance(node, (ast.Tuple, ast.List, ast.Set, ast.Dict)):
            items = node.keys if isinstance(node, ast.Dict) else node.elts
            kinds = [i.value for i in items if isinstance(i, ast.Constant) and i.value in KIND_NAMES]
            if len(kinds) >= 2:
                found.append((node.lineno, "+".join(kinds)))
    return found


def test_no_second_list_of_adapter_kinds_in_loader_nodes_or_web():
    offenders = []
    for path in _python_files():
        for line, name in _kind_constants(ast.parse(path.read_text())):
            offenders.append(f"{path.relative_to(ROOT)}:{line}: {name!r}")
    kinds = "|".join(sorted(KIND_NAMES - GENERIC))
    quoted = re.compile(rf"""["'`]({kinds})["'`]""")
    for path in sorted((ROOT / "web").rglob("*.js")):
        for number, text in enumerate(path.read_text().splitlines(), 1):
            if quoted.search(text):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {text.strip()[:80]}")
    assert not offenders, "adapter kinds named outside loader/adapter_types/:\n" + "\n".join(offenders)


def test_the_scan_finds_a_second_list_when_there_is_one():
    tree = ast.parse('KIND_ORDER = ("loha", "lokr", "lora")\nif kind == "glora":\n    pass\n')
    assert {name for _, name in _kind_constants(tree)} >= {"loha", "lokr", "glora", "loha+lokr+lora"}


@pytest.mark.parametrize("adapter_type", adapter_types.REGISTRY, ids=lambda t: t.kind)
def test_every_registered_type_has_every_member(adapter_type):
    for member in CLASS_MEMBERS + ADAPTER_MEMBERS:
        assert hasattr(adapter_type, member), f"{adapter_type.__name__} has no {member}"
    assert isinstance(adapter_type.kind, str) and adapter_type.kind
    assert adapter_type.required and all(isinstance(need, frozenset) and need for need in adapter_type.required)
    for suffix, role in adapter_type.suffixes + adapter_type.shared_suffixes:
        assert suffix[0] in "._" and isinstance(role, str)
    assert pyinspect.getmodule(adapter_type).__name__.startswith("loader.adapter_types.")
    assert adapter_types.named(adapter_type.kind) is adapter_type


def test_kinds_are_unique_and_every_suffix_names_one_role():
    kinds = [t.kind for t in adapter_types.REGISTRY]
    assert len(kinds) == len(set(kinds))
    roles = {}
    for suffix, _, role in formats.SUFFIXES:
        assert roles.setdefault(suffix, role) == role, suffix


def _file_tensors():
    g = torch.Generator().manual_seed(3)

    def r(*shape):
        return torch.randn(*shape, generator=g) * 0.3

    return {
        "m_loha.hada_w1_a": r(64, 4), "m_loha.hada_w1_b": r(4, 32), "m_loha.hada_w2_a": r(64, 4),
        "m_loha.hada_w2_b": r(4, 32), "m_loha.alpha": torch.tensor(2.0),
        "m_lokr.lokr_w1": r(4, 4), "m_lokr.lokr_w2_a": r(16, 2), "m_lokr.lokr_w2_b": r(2, 8),
        "m_lokr.alpha": torch.tensor(1.0),
        "m_ia3.weight": r(64), "m_ia3.on_input": torch.tensor(0),
        "m_glora.a1.weight": r(32, 4), "m_glora.a2.weight": r(4, 32), "m_glora.b1.weight": r(64, 4),
        "m_glora.b2.weight": r(4, 32), "m_glora.alpha": torch.tensor(4.0),
        "m_oft.oft_blocks": r(8, 8, 8), "m_oft.rescale": 1 + r(64, 1),
        "m_boft.oft_blocks": r(3, 8, 8, 8),
        "m_full.diff": r(64, 32), "m_full.diff_b": r(64),
        "m_norm.w_norm": r(64), "m_norm.b_norm": r(64),
        "m_lora.lora_down.weight": r(4, 32), "m_lora.lora_up.weight": r(64, 4), "m_lora.alpha": torch.tensor(2.0),
        "m_dora.lora_down.weight": r(4, 32), "m_dora.lora_up.weight": r(64, 4), "m_dora.dora_scale": 1 + r(64, 1),
        "m_bias.diff_b": r(64),
        # a BFL control LoRA's markers: its norm scales are `set` modules, its img_in LoRA widens (here: not)
        "img_in.lora_A.weight": r(4, 32), "img_in.lora_B.weight": r(64, 4),
        "single_blocks.0.norm.key_norm.scale": r(64),
    }


def test_every_type_in_a_file_is_detected_built_and_measured_exactly(tmp_path):
    """‖ΔW‖ from each type's `norm` equals the norm of its full change on a base weight (our math, checked
    against the producers in tests/integration/test_formats.py); with the weight, none is left unmeasured."""
    tensors = _file_tensors()
    path = tmp_path / "every_type.safetensors"
    save_file(tensors, str(path))
    layout = formats.describe(files.read_header(str(path)))
    assert {m.kind for m in layout.modules.values()} == set(adapter_types.KINDS), "a registered type untested"
    g = torch.Generator().manual_seed(4)
    for key, module in layout.modules.items():
        adapter = adapter_types.build(module, tensors)
        weight = torch.randn((64,) if module.kind in ("norm", "bias", "set") else (64, 32), generator=g)
        exact = float(adapter.delta(weight).double().norm())
        assert adapter.norm(weight) == pytest.approx(exact, rel=1e-5), key
        if not adapter.needs_weight:
            assert adapter.norm() == pytest.approx(exact, rel=1e-5), key
        elif adapter.weight_dependent:
            assert adapter.norm() is None, key  # it depends on the base weight: not measured without it
