// Block layouts per architecture, for the info panel's block-energy picture. Block-weight specs are read
// only by the server's grammar (the block editor asks POST /loradeck/spec); nothing here parses one.

const ids = (prefix, count) => Array.from({ length: count }, (_, i) => prefix + String(i).padStart(2, "0"));

export const LAYOUTS = {
  sd1: {
    label: "SD 1.x / 2.x UNet",
    text: ["BASE"],
    down: ids("IN", 12),
    mid: ["M00"],
    up: ids("OUT", 12),
  },
  sdxl: {
    label: "SDXL UNet",
    text: ["BASE"],
    down: ids("IN", 9),
    mid: ["M00"],
    up: ids("OUT", 9),
  },
  flux: {
    label: "Flux (double + single blocks)",
    text: ["BASE"],
    chains: [["Double", ids("D", 19)], ["Single", ids("S", 38)]],
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
  };
  return key;
}

export function layoutIds(layout) {
  const L = LAYOUTS[layout];
  if (L.chains) return [...L.text, ...L.chains.flatMap(([, chain]) => chain)];
  return [...L.text, ...L.down, ...L.mid, ...L.up];
}
