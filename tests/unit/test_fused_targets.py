"""Placing a fused q/k/v module (`to_qkv`, `to_added_qkv`) on the host's keys for its parts, and cutting its rows.

The references are plain tensor algebra: rows of the fused module's full change (the producers' math, written out
here), not this package's own placement code.
"""

import pytest
import torch

from loader.adapter_types import OFT, LoKr, LoRA
from loader.fused_targets import FusedSplitError, Part, part_names, place, rows_of

D, IN = 6, 5


def lookup_from(keys: dict):
    return lambda name: ("model", keys.get(name))


def test_part_names_only_for_fused_modules():
    assert part_names("transformer_blocks.0.attn.to_qkv") == [
        "transformer_blocks.0.attn.to_q", "transformer_blocks.0.attn.to_k", "transformer_blocks.0.attn.to_v"]
    assert part_names("lycoris_transformer_blocks_0_attn_to_added_qkv")[-1] == \
        "lycoris_transformer_blocks_0_attn_add_v_proj"
    assert part_names("transformer_blocks.0.attn.to_q") == []


def test_parts_covering_one_weight_in_order_become_that_weight():
    keys = {f"a.{p}": ("qkv.weight", (0, i * D, D)) for i, p in enumerate(("to_q", "to_k", "to_v"))}
    shapes = {"model": {"qkv.weight": (3 * D, IN)}}
    assert place("a.to_qkv", lookup_from(keys), shapes) == [Part("model", "qkv.weight", None)]


def test_parts_on_adjacent_rows_of_a_larger_weight_become_one_slice():
    keys = {f"a.{p}": ("linear1.weight", (0, i * D, D)) for i, p in enumerate(("to_q", "to_k", "to_v"))}
    shapes = {"model": {"linear1.weight": (7 * D, IN)}}  # Flux single blocks: q, k, v, then the MLP rows
    assert place("a.to_qkv", lookup_from(keys), shapes) == [Part("model", ("linear1.weight", (0, 0, 3 * D)), None)]


def test_parts_on_separate_weights_get_their_rows():
    keys = {f"a.{p}": f"{p}.weight" for p in ("to_q", "to_k", "to_v")}
    shapes = {"model": {f"{p}.weight": (D, IN) for p in ("to_q", "to_k", "to_v")}}
    assert place("a.to_qkv", lookup_from(keys), shapes) == [
        Part("model", "to_q.weight", (0, D, 3 * D)), Part("model", "to_k.weight", (D, D, 3 * D)),
        Part("model", "to_v.weight", (2 * D, D, 3 * D))]


def test_parts_out_of_order_on_one_weight_are_placed_one_by_one():
    order = {"to_q": 1, "to_k": 0, "to_v": 2}
    keys = {f"a.{p}": ("qkv.weight", (0, i * D, D)) for p, i in order.items()}
    shapes = {"model": {"qkv.weight": (3 * D, IN)}}
    placed = place("a.to_qkv", lookup_from(keys), shapes)
    assert [part.key for part in placed] == [keys["a.to_q"], keys["a.to_k"], keys["a.to_v"]]
    assert [part.rows for part in placed] == [(0, D, 3 * D), (D, D, 3 * D), (2 * D, D, 3 * D)]


def test_a_part_the_host_does_not_know_places_nothing():
    keys = {"a.to_q": "to_q.weight", "a.to_k": "to_k.weight"}
    shapes = {"model": {"to_q.weight": (D, IN), "to_k.weight": (D, IN)}}
    assert place("a.to_qkv", lookup_from(keys), shapes) == []


def test_lora_rows_are_rows_of_the_fused_change():
    torch.manual_seed(0)
    lora = LoRA(up=torch.randn(3 * D, 2), down=torch.randn(2, IN), scale=0.5, bias=torch.randn(3 * D))
    full = 0.5 * lora.up @ lora.down
    cut = rows_of(lora, (D, D, 3 * D), (D, IN), "a.to_qkv")
    torch.testing.assert_close(cut.change(torch.zeros(D, IN)), full[D:2 * D], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cut.bias, lora.bias[D:2 * D])


def test_lokr_rows_are_rows_of_the_kronecker_product():
    torch.manual_seed(1)
    lokr = LoKr(w1=torch.randn(3, 1), w2a=torch.randn(D, 2), w2b=torch.randn(2, IN), scale=0.25)
    full = 0.25 * torch.kron(lokr.w1, lokr.w2a @ lokr.w2b)
    for start in (0, D, 2 * D):
        cut = rows_of(lokr, (start, D, 3 * D), (D, IN), "a.to_qkv")
        torch.testing.assert_close(cut.change(torch.zeros(D, IN)), full[start:start + D], rtol=1e-6, atol=1e-6)


def test_a_change_that_needs_the_whole_weight_is_refused_by_name():
    oft = OFT(blocks=torch.zeros(3, D, D))
    with pytest.raises(FusedSplitError, match=r"a\.to_qkv: its oft change depends on the whole fused q/k/v weight"):
        rows_of(oft, (0, D, 3 * D), (D, IN), "a.to_qkv")
