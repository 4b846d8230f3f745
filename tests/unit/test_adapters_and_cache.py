"""LoRA math against independent formulas, and the file cache's identity, bounds and read counts."""

import os

import torch
from safetensors.torch import save_file

from loader import adapter_types as adapters
from loader import cache, files

gen = torch.Generator().manual_seed(0)


def rand(*shape):
    return torch.randn(*shape, generator=gen)


def test_linear_lora_is_scaled_up_at_down():
    up, down, weight = rand(6, 3), rand(3, 5), rand(6, 5)
    lora = adapters.LoRA(up=up, down=down, scale=8 / 3)
    expected = weight + 0.7 * (8 / 3) * up @ down
    adapters_weight = weight.clone()
    lora.apply_(adapters_weight, 0.7)
    torch.testing.assert_close(adapters_weight, expected, rtol=1e-6, atol=1e-6)


def test_conv_locon_equals_kohyas_merge():
    down, up, weight = rand(4, 3, 3, 3), rand(8, 4, 1, 1), rand(8, 3, 3, 3)
    # sd-scripts merges a conv LoCon as conv2d(down.permute(1,0,2,3), up).permute(1,0,2,3)
    kohya = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    torch.testing.assert_close(adapters.LoRA(up=up, down=down).delta(weight), kohya, rtol=1e-5, atol=1e-5)


def test_tucker_mid_equals_the_einsum():
    down, mid, up, weight = rand(4, 3, 1, 1), rand(4, 4, 3, 3), rand(8, 4, 1, 1), rand(8, 3, 3, 3)
    expected = torch.einsum("mnhw,om,ni->oihw", mid, up.flatten(1), down.flatten(1))
    torch.testing.assert_close(adapters.LoRA(up=up, down=down, mid=mid).delta(weight), expected,
                               rtol=1e-5, atol=1e-5)


def test_dora_normalises_by_the_merged_weight():
    up, down, weight = rand(6, 2), rand(2, 6), rand(6, 6)  # square: axis must come from shape[0], not numel
    merged = weight + up @ down
    rows = rand(6, 1).abs()
    lora = adapters.LoRA(up=up, down=down, dora_scale=rows)
    result = weight.clone()
    lora.apply_(result, 1.0)
    torch.testing.assert_close(result, rows * merged / merged.norm(dim=1, keepdim=True), rtol=1e-5, atol=1e-6)
    columns = rand(1, 6).abs()
    result = weight.clone()
    adapters.LoRA(up=up, down=down, dora_scale=columns).apply_(result, 0.5)
    target = columns * merged / merged.norm(dim=0, keepdim=True)
    torch.testing.assert_close(result, weight + 0.5 * (target - weight), rtol=1e-5, atol=1e-6)
    magnitude = rand(6).abs()
    result = weight.clone()
    adapters.LoRA(up=up, down=down, magnitude=magnitude).apply_(result, 1.0)
    torch.testing.assert_close(result, magnitude[:, None] * merged / merged.norm(dim=1, keepdim=True),
                               rtol=1e-5, atol=1e-6)


def write_lora(path, seed=0, rank=4):
    g = torch.Generator().manual_seed(seed)
    save_file({"lora_unet_x.lora_down.weight": torch.randn(rank, 8, generator=g),
               "lora_unet_x.lora_up.weight": torch.randn(8, rank, generator=g),
               "lora_unet_x.alpha": torch.tensor(float(rank) / 2)}, str(path))
    return str(path)


def test_cache_reads_each_file_once_until_it_changes(tmp_path):
    path = write_lora(tmp_path / "a.safetensors")
    store = cache.LoraCache(max_bytes=10**6)
    opened = files.stats.files_opened
    first = store.load(path)
    assert files.stats.files_opened == opened  # the header only: tensors are read when a module is used
    assert first.adapters["lora_unet_x"].scale == 0.5
    assert store.load(path) is first and store.load(path).adapters and files.stats.files_opened == opened + 1
    write_lora(tmp_path / "a.safetensors", seed=1)
    os.utime(path, ns=(1, first.identity[2] + 10**9))
    second = store.load(path)
    assert second is not first and second.adapters and files.stats.files_opened == opened + 2


def test_cache_is_bounded_by_bytes(tmp_path):
    paths = [write_lora(tmp_path / f"{i}.safetensors", seed=i, rank=16) for i in range(4)]
    one = sum(info.nbytes for info in files.read_header(paths[0]).tensors.values())
    store = cache.LoraCache(max_bytes=int(2.5 * one))
    loaded = [store.load(p) for p in paths]
    for entry in loaded:
        assert entry.adapters  # reading the tensors is what fills the cache
    assert store.nbytes <= 2.5 * one
    assert store.load(paths[3]) is loaded[3] and store.load(paths[2]) is loaded[2]
    assert store.load(paths[0]) is not loaded[0]  # evicted, read again


def test_only_the_modules_asked_for_are_read(tmp_path):
    g = torch.Generator().manual_seed(0)
    tensors = {}
    for name in ("lora_unet_a", "lora_unet_b", "lora_te_c"):
        tensors[f"{name}.lora_down.weight"] = torch.randn(4, 8, generator=g).to(torch.float16)
        tensors[f"{name}.lora_up.weight"] = torch.randn(8, 4, generator=g).to(torch.float16)
        tensors[f"{name}.alpha"] = torch.tensor(2.0)
    save_file(tensors, str(tmp_path / "abc.safetensors"))
    loaded = cache.read_lora(str(tmp_path / "abc.safetensors"))
    read = files.stats.bytes_read
    picked = loaded.adapters_for(["lora_unet_b"])
    assert picked["lora_unet_b"].up.dtype == torch.float16  # stored dtype, no conversion on read
    assert files.stats.bytes_read - read == 2 * 4 * 8 * 2 + 4 == loaded.nbytes
    assert set(loaded.tensors) == {"lora_unet_b.lora_down.weight", "lora_unet_b.lora_up.weight", "lora_unet_b.alpha"}
