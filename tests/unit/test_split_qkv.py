"""Telling kohya Flux split_qkv modules and their training record apart (loader/split_qkv.py), host-free.

The end-to-end math against sd-scripts' two writers and the host is in tests/integration/test_split_qkv.py."""

import json

import pytest
import torch

from loader import split_qkv
from loader.adapter_types import LoRA

QKV = "lora_unet_double_blocks_0_img_attn_qkv"
LINEAR1 = "lora_unet_single_blocks_1_linear1"


def block_diagonal(rows: list[int], rank: int) -> torch.Tensor:
    up = torch.zeros(sum(rows), rank * len(rows))
    start = 0
    for j, n in enumerate(rows):
        up[start:start + n, j * rank:(j + 1) * rank] = torch.randn(n, rank)
        start += n
    return up


def test_parts_are_read_from_the_block_diagonal_up():
    assert split_qkv.parts(QKV, block_diagonal([8, 8, 8], 2)) == 3
    assert split_qkv.parts(LINEAR1, block_diagonal([8, 8, 8, 32], 2)) == 4
    dense = block_diagonal([8, 8, 8], 2)
    dense[0, 5] = 0.1  # one entry off the diagonal blocks: an ordinary rank-6 LoRA
    assert split_qkv.parts(QKV, dense) == 1
    assert split_qkv.parts("lora_unet_double_blocks_0_img_attn_proj", block_diagonal([8, 8, 8], 2)) == 1


@pytest.mark.parametrize(("args", "trained"), [
    ({"split_qkv": "True"}, True), ({"split_qkv": "True", "train_blocks": "single"}, True),
    ({"split_qkv": "true"}, False),  # sd-scripts enables it for the exact string "True" only
    ({"split_qkv": "False"}, False), ({}, False), (None, False), ("not json", False), (["split_qkv"], False),
])
def test_training_record_is_sd_scripts_network_args(args, trained):
    metadata = {} if args is None else {"ss_network_args": args if isinstance(args, str) else json.dumps(args)}
    assert split_qkv.trained_by_sd_scripts(metadata) is trained


def test_conventions_rescale_only_split_modules():
    up, down = block_diagonal([4, 4, 4], 2), torch.randn(6, 4)
    core = LoRA(up=up, down=down, scale=0.5 / 6, split_parts=3)
    trained = split_qkv.at_convention(core, "trained")
    assert trained.scale == pytest.approx(0.5 / 2) and trained.trained_scale
    assert split_qkv.at_convention(trained, "core").scale == pytest.approx(0.5 / 6)
    assert split_qkv.at_convention(core, "auto") is core and split_qkv.at_convention(trained, "auto") is trained
    plain = LoRA(up=torch.randn(12, 6), down=down, scale=0.5 / 6)
    assert split_qkv.at_convention(plain, "trained") is plain
    with pytest.raises(ValueError, match="one of auto, trained, core"):
        split_qkv.at_convention(core, "loud")
