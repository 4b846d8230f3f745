"""A1111 lora-block-weight's own tables (lora_block_weight.py b403cb7), written out by hand as test references:
BLOCKID26/17/12/20 and DEF_WEIGHT_PRESET, and its to26() reading of a vector."""

ID26 = ["BASE"] + [f"IN{i:02d}" for i in range(12)] + ["M00"] + [f"OUT{i:02d}" for i in range(12)]
ID17 = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(3, 12))]
ID12 = ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", *(f"OUT{i:02d}" for i in range(6))]
ID20 = ["BASE"] + [f"IN{i:02d}" for i in range(9)] + ["M00"] + [f"OUT{i:02d}" for i in range(9)]
LAYOUTS = {17: ID17, 26: ID26, 12: ID12, 20: ID20}

PRESETS = {
    "NONE": [0] * 17,
    "ALL": [1] * 17,
    "INS": [1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "IND": [1, 0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "INALL": [1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    "MIDD": [1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTD": [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],
    "OUTS": [1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1],
    "OUTALL": [1, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    "ALL0.5": [0.5] * 17,
}


def to26(values: list[float]) -> dict[str, float]:
    """A1111's to26(): ids of the vector's layout get its values, every other 26-slot gets 0."""
    out = dict.fromkeys(ID26, 0.0)
    out.update(zip(LAYOUTS[len(values)], values, strict=True))
    return out
