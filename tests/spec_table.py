"""The block-weight grammar's table of specs: what tests/unit/test_spec.py reads and checks, and what the
browser tests open in the block editor (every one must come back byte for byte).

SPECS: name -> (model family the spec is written for, spec). ERRORS: (spec, what its SpecError says), on SD1.
USER_PRESETS: the user presets the specs may name (the browser server's block_presets.txt holds them too).
"""

from __future__ import annotations

from a1111 import PRESETS as A1111_PRESETS

USER_PRESETS = {
    "FACE": "default=0; OUT03-OUT05=1; BASE=1",
    "AOUT": "A=0.3; OUT*=A",
    "RND": "SEED=5; IN04=R",
}


def _ramp(length: int) -> str:
    return ",".join(str(round(0.05 * (i + 1), 2)) for i in range(length))


_RANDOM = ",".join(["R"] * 8 + ["U"] * 9)

SPECS: dict[str, tuple[str, str]] = {
    "empty": ("sd1", ""),
    "blank": ("sd1", "  ;\n "),
    "one_assignment": ("sd1", "IN04=0.5"),
    "single_number": ("sd1", "0.5"),
    "named_sd1": ("sd1", "IN04-IN05=0, OUT*=0.5, BASE=0.25"),
    "named_flux": ("flux", "D00-D05=0.5, S*=0.3"),
    "default_first": ("sd1", "default=0, M00=1"),
    "default_last": ("sd1", "M00=1, default=0"),
    "range_across_middle": ("sd1", "IN08-OUT01=0"),
    "range_reversed": ("sd1", "OUT01-IN08=0"),
    "not_list": ("sd1", "NOT IN04 OUT05 M00=0"),
    "alias_mid": ("sd1", "MID=0"),
    "alias_te": ("sdxl", "TE=0"),
    "alias_clip_g": ("sdxl", "CLIP_G=0.5"),
    "aliases_flux": ("flux", "T5=0, DOUBLE=0.5, IN=0.2, OUT=0.1"),
    "lower_case": ("sd1", "in04=0; m00=0.5"),
    "preset": ("sd1", "MIDD"),
    "preset_lower_case": ("sd1", "midd"),
    "exponents": ("sd1", "IN04=5e-1, OUT05=1.5E0, M00=-2.5e-1"),
    "variables": ("sd1", "A=0.6; B=0.2; IN04=A, IN05=a, OUT03=B, OUT04=b"),
    "variables_in_vector": ("sd1", "A,1,1,1,1,1,1,1,1,1,1,1,B,B,B,B,B"),
    "random": ("sd1", _RANDOM),
    "random_seeded": ("sd1", "SEED=7; " + _RANDOM),
    "elemental": ("sd1", "IN05=0.8; @IN05-OUT05:attn2:0.5"),
    "elemental_not_replace": ("sd1", "@OUT05:NOT attn proj:=0.2"),
    "elemental_everything": ("sd1", "@::0"),
    "elemental_last_wins": ("sd1", "@IN04:attn:0.5; @IN04:attn1:0.25"),
    "elemental_first_loses": ("sd1", "@IN04:attn1:0.25; @IN04:attn:0.5"),
    "elemental_fused": ("flux", "@D*:img_attn.qkv.q:0; @S*:linear1.mlp:0.5; @DOUBLE:txt_mlp:0.3"),
    "vector_sd1_17": ("sd1", _ramp(17)),
    "vector_sd1_26": ("sd1", _ramp(26)),
    "vector_sd1_12": ("sd1", _ramp(12)),
    "vector_sd1_20": ("sd1", _ramp(20)),
    "vector_sdxl_12": ("sdxl", _ramp(12)),
    "vector_sdxl_20": ("sdxl", _ramp(20)),
    "vector_sdxl_17": ("sdxl", _ramp(17)),
    "vector_sdxl_26": ("sdxl", _ramp(26)),
    "base_on_sdxl": ("sdxl", "0.25," + ",".join(["1"] * 11)),
    "fluxall": ("flux", "FLUXALL"),
    "flux_61": ("flux", ",".join(map(str, [0.1, 0.2, 0.3] + [0.4] * 19 + [0.5] * 38 + [0.6]))),
    "flux_58": ("flux", ",".join(["0.7"] + ["0.2"] * 19 + ["0.3"] * 38)),
    "flux_57": ("flux", ",".join(["0.2"] * 19 + ["0.3"] * 38)),
    "inspire_label": ("sd1", "MYFACE:" + ",".join(map(str, A1111_PRESETS["MIDD"]))),
    "user_preset": ("sd1", "FACE; IN04=0.5"),
    "user_preset_variables": ("sd1", "AOUT"),
    "spec_variables_win": ("sd1", "A=0.9; AOUT"),
    "user_preset_seed": ("sd1", "RND"),
    "seeded_like_the_preset": ("sd1", "SEED=5; IN04=R"),
    "beyond_the_sliders": ("sd1", "IN04=3, OUT05=-2"),
}

ERRORS: list[tuple[str, str]] = [
    ("IN99=1", "unknown block id 'IN99'"),
    ("IN04=1, XX=2", "character 9: unknown block id 'XX'"),
    ("FOO", "'FOO' is not a preset"),
    ("IN04=x", "character 6: 'x' is not a value"),
    ("1,,1", "character 3"),
    ("IN04=nan", "not a value"),
    ("IN04=1e9", "outside"),
    ("IN04", "not a preset"),
    ("IN04=1, 0.5", "should look like TARGET=value"),
    ("@IN04:attn", "@BLOCKS:ELEMENTS:value"),
    ("@IN04:atn1:0", "element 'atn1' matches no weight"),
    ("NOT=0", "NOT needs a block"),
    ("Q*=1", "matches no block"),
    ("IN04-OUT=1", "single block ids at both ends"),
    ("A=x; IN04=A", "A must be set to a number"),
    ("IN04=\x00", "control character"),
]


def spec(name: str) -> str:
    return SPECS[name][1]
