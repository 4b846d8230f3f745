// Block layouts per architecture, presets, and the block-weight spec text the rows carry.
//
// The editor writes named assignments over canonical block ids ("IN04=0, OUT05=0.5"; blocks left at
// 1.0 are not written), which the server reads the same way for every architecture. It also reads
// A1111 lora-block-weight presets and positional vectors (SD1 17/26, SDXL 12/20 values, missing = 0).

const ids = (prefix, count) => Array.from({ length: count }, (_, i) => prefix + String(i).padStart(2, "0"));

export const LAYOUTS = {
  sd1: {
    label: "SD 1.x / 2.x UNet",
    text: ["BASE"],
    down: ids("IN", 12),
    mid: ["M00"],
    up: ids("OUT", 12),
    vectors: {
      17: ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00",
        "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11"],
      26: ["BASE", ...ids("IN", 12), "M00", ...ids("OUT", 12)],
    },
  },
  sdxl: {
    label: "SDXL UNet",
    text: ["BASE"],
    down: ids("IN", 9),
    mid: ["M00"],
    up: ids("OUT", 9),
    vectors: {
      12: ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", ...ids("OUT", 6)],
      20: ["BASE", ...ids("IN", 9), "M00", ...ids("OUT", 9)],
    },
  },
  flux: {
    label: "Flux (double + single blocks)",
    text: ["BASE"],
    chains: [["Double", ids("D", 19)], ["Single", ids("S", 38)]],
    vectors: {},
  },
};

export const BASE_TO_LAYOUT = { sd1: "sd1", sd2: "sd1", sdxl: "sdxl", flux: "flux" };

/**
 * The layout key for a LoRA's own block ids (from /loradeck/energy): a known shape when they are one,
 * else a layout of its chains (SD3 J00…, Wan B00…) registered under a key naming that shape.
 */
export function layoutForBlocks(blockIds) {
  const ids = blockIds.filter((id) => !["BASE", "EMB", "FINAL"].includes(id));
  if (!ids.length) return null;
  if (ids.some((id) => id.startsWith("IN"))) {
    return ids.filter((id) => id.startsWith("IN")).length <= 9 ? "sdxl" : "sd1";
  }
  const chains = [];
  for (const id of ids) {
    const prefix = id.replace(/\d+$/, "");
    const chain = chains.find(([name]) => name === prefix);
    if (chain) chain[1].push(id);
    else chains.push([prefix, [id]]);
  }
  if (chains.length === 2 && chains[0][0] === "D" && chains[1][0] === "S" && chains[0][1].length <= 19
      && chains[1][1].length <= 38) return "flux";
  const key = "chains:" + chains.map(([name, list]) => `${name}${list.length}`).join("+");
  LAYOUTS[key] ??= {
    label: `This LoRA's blocks (${chains.map(([name, list]) => `${name}×${list.length}`).join(", ")})`,
    text: blockIds.includes("BASE") ? ["BASE"] : [],
    chains: chains.map(([name, list]) => [name, list]),
    vectors: {},
  };
  return key;
}

export function layoutIds(layout) {
  const L = LAYOUTS[layout];
  if (L.chains) return [...L.text, ...L.chains.flatMap(([, chain]) => chain)];
  return [...L.text, ...L.down, ...L.mid, ...L.up];
}

// A1111 lora-block-weight's built-in presets, on its 17-value SD1 layout (missing blocks = 0).
const A1111 = {
  ALL: "1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1",
  NONE: "0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0",
  INS: "1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0",
  IND: "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0",
  INALL: "1,1,1,1,1,1,1,0,0,0,0,0,0,0,0,0,0",
  MIDD: "1,0,0,0,1,1,1,1,1,1,1,1,0,0,0,0,0",
  OUTD: "1,0,0,0,0,0,0,0,1,1,1,1,0,0,0,0,0",
  OUTS: "1,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1,1",
  OUTALL: "1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1",
  "ALL0.5": "0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5",
};

/** [{name, title, values: Map}] for the preset picker of one layout. */
export function presets(layout) {
  const all = layoutIds(layout);
  const L = LAYOUTS[layout];
  const make = (name, title, fn) => ({ name, title, values: new Map(all.map((id) => [id, fn(id)])) });
  const list = [
    make("ALL", "All blocks 1", () => 1),
    make("NONE", "All blocks 0", () => 0),
    make("ALL0.5", "All blocks 0.5", () => 0.5),
    make("NOTE", "Text encoder off", (id) => (id === "BASE" ? 0 : 1)),
  ];
  if (layout === "flux") {
    list.push(make("DOUBLE", "Double blocks only", (id) => (id.startsWith("S") ? 0 : 1)));
    list.push(make("SINGLE", "Single blocks only", (id) => (id.startsWith("D") ? 0 : 1)));
  } else if (!L.chains) {
    list.push(make("IN", "Input blocks only", (id) => (id === "BASE" || id.startsWith("IN") ? 1 : 0)));
    list.push(make("MID", "Middle block only", (id) => (id === "BASE" || id === "M00" ? 1 : 0)));
    list.push(make("OUT", "Output blocks only", (id) => (id === "BASE" || id.startsWith("OUT") ? 1 : 0)));
  }
  if (layout === "sd1") {
    for (const name of ["INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL"]) {
      list.push({ name, title: `A1111 ${name}`, values: fromVector(A1111[name].split(",").map(Number), layout) });
    }
  }
  return list;
}

function fromVector(numbers, layout) {
  const order = LAYOUTS[layout].vectors[numbers.length];
  const values = new Map(layoutIds(layout).map((id) => [id, 0]));
  order.forEach((id, i) => values.set(id, numbers[i]));
  return values;
}

/**
 * Slider values from a spec: {values: Map id -> number, error: string|null}.
 * Unknown forms give an error and all-1 values; the text itself is kept by the caller.
 */
export function parseSpec(text, layout) {
  const all = layoutIds(layout);
  const values = new Map(all.map((id) => [id, 1]));
  const spec = (text || "").trim();
  if (!spec) return { values, error: null };
  const preset = A1111[spec.toUpperCase()];
  if (preset && layout === "sd1") return { values: fromVector(preset.split(",").map(Number), layout), error: null };
  const parts = spec.split(/[,;\n]/).map((p) => p.trim()).filter(Boolean);
  if (parts.every((p) => /^-?\d*\.?\d+$/.test(p))) {
    if (LAYOUTS[layout].vectors[parts.length]) return { values: fromVector(parts.map(Number), layout), error: null };
    const lengths = Object.keys(LAYOUTS[layout].vectors).join(" or ");
    return { values, error: `a ${parts.length}-value vector does not fit ${LAYOUTS[layout].label}` +
      (lengths ? ` (it takes ${lengths} values)` : "") };
  }
  for (const part of parts) {
    const match = part.match(/^([A-Za-z0-9*\- ]+?)\s*=\s*(-?\d*\.?\d+)$/);
    if (!match) return { values: new Map(all.map((id) => [id, 1])), error: `cannot read "${part}" (expected ID=value)` };
    const targets = expandTarget(match[1].trim().toUpperCase(), all);
    if (!targets) return { values: new Map(all.map((id) => [id, 1])), error: `unknown block "${match[1].trim()}"` };
    for (const id of targets) values.set(id, Number(match[2]));
  }
  return { values, error: null };
}

function expandTarget(target, all) {
  if (target === "DEFAULT") return all;
  if (target.includes("*")) {
    const re = new RegExp("^" + target.replace(/\*/g, ".*") + "$");
    const hit = all.filter((id) => re.test(id));
    return hit.length ? hit : null;
  }
  const range = target.match(/^([A-Z]+\d+)\s*-\s*([A-Z]+\d+)$/);
  if (range) {
    const a = all.indexOf(range[1]);
    const b = all.indexOf(range[2]);
    return a >= 0 && b >= a ? all.slice(a, b + 1) : null;
  }
  return all.includes(target) ? [target] : null;
}

/** The spec text for slider values: assignments for the blocks not at 1.0, in network order. */
export function formatSpec(values, layout) {
  return layoutIds(layout)
    .filter((id) => values.has(id) && Math.abs(values.get(id) - 1) > 1e-9)
    .map((id) => `${id}=${round(values.get(id))}`)
    .join(", ");
}

export const round = (x) => Math.round(x * 1000) / 1000;
