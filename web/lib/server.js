// The pack's HTTP routes (nodes/routes.py), with small caches so a node with many rows asks once.
import { api } from "./comfy.js";

let listPromise = null;
let listedAt = 0;
const LIST_MAX_AGE_MS = 5000; // files added to the folders show up without a page reload
const infoCache = new Map();
const hashCache = new Map();

async function getJson(path, options) {
  const response = await api.fetchApi(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
  return body;
}

const q = (name) => encodeURIComponent(name);

/** Every LoRA in the loras folders: [{name, size, mtime}]. `fresh` re-reads the folders. */
export function listLoras(fresh = false) {
  if (fresh || !listPromise || Date.now() - listedAt > LIST_MAX_AGE_MS) {
    listedAt = Date.now();
    listPromise = getJson("/loradeck/list").then((b) => b.loras).catch((e) => {
      listPromise = null;
      throw e;
    });
  }
  return listPromise;
}

export async function loraNames(fresh = false) {
  return new Set((await listLoras(fresh)).map((l) => l.name));
}

/** Facts about one LoRA from its header (format, adapters, base, rank/alpha, tags, ...). */
export function loraInfo(name) {
  if (!infoCache.has(name)) {
    infoCache.set(name, getJson(`/loradeck/info?name=${q(name)}`).catch((e) => {
      infoCache.delete(name);
      throw e;
    }));
  }
  return infoCache.get(name);
}

/** {words, sources, pinned, notes}: the trigger words of one LoRA, offline (metadata, sidecars, pinned). */
export function loraTriggerWords(name) {
  return getJson(`/loradeck/trigger_words?name=${q(name)}`);
}

/** Pin `words` for one LoRA (an empty list unpins); the server stores them atomically. */
export function pinTriggerWords(name, words) {
  return getJson("/loradeck/trigger_words", { method: "POST", body: JSON.stringify({ name, words }) });
}

/** The address of a LoRA's preview image (a sidecar beside it; the info says whether there is one). */
export function previewURL(name) {
  return api.apiURL(`/loradeck/preview?name=${q(name)}`);
}

/** {sha256, autov2} of one LoRA; the server hashes it once and remembers. */
export function loraHash(name) {
  if (!hashCache.has(name)) {
    hashCache.set(name, getJson(`/loradeck/hash?name=${q(name)}`).catch((e) => {
      hashCache.delete(name);
      throw e;
    }));
  }
  return hashCache.get(name);
}

let presetsPromise = null;

/** {builtin: {NAME: spec}, user: {NAME: spec}}: A1111's presets and the user's block_presets.txt. */
export function blockPresets() {
  presetsPromise ??= getJson("/loradeck/presets").catch(() => {
    presetsPromise = null;
    return { builtin: {}, user: {} };
  });
  return presetsPromise;
}

const energyCache = new Map();

/** {base, shares: {block: 0..1}, measured, not_measured}: where the LoRA changes the network most. */
export function loraEnergy(name) {
  if (!energyCache.has(name)) {
    energyCache.set(name, getJson(`/loradeck/energy?name=${q(name)}`).then((body) => {
      if (body.error) throw new Error(body.error);
      return body;
    }).catch((e) => {
      energyCache.delete(name);
      throw e;
    }));
  }
  return energyCache.get(name);
}

/** Names of the LoRAs whose SHA-256 is `sha256` (a moved or renamed file); `size` (bytes), when the row
 * knows it, lets the server hash only files of that size. */
export async function findByHash(sha256, size = null) {
  const bySize = Number.isInteger(size) && size >= 0 ? `&size=${size}` : "";
  return (await getJson(`/loradeck/find?sha256=${q(sha256)}${bySize}`)).matches;
}

/**
 * How the server's grammar reads a block-weight spec on a layout (sd1 | sdxl | flux | lora, or null to let
 * the row's LoRA choose): the layout's slots, each slot's ratio, the reading, or an error and its position.
 */
export function readSpec({ spec, layout = null, lora = null }) {
  return getJson("/loradeck/spec", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ spec, layout, lora }),
  });
}

/** How LoraDeckPrompt reads the tags of a text: {tags: [{tag, position, file|null, error?, model, clip, blocks}],
 * error (a malformed tag) or null}. */
export function readPromptTags(text) {
  return getJson("/loradeck/prompt_tags", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ text }),
  });
}

export function forgetLoras() {
  listPromise = null;
  infoCache.clear();
  hashCache.clear();
  energyCache.clear();
}
