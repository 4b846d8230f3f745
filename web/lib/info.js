// The LoRA info panel: what the file says about itself (format, adapters, base model, rank/alpha,
// resolution, training tags with counts), its size and its hashes. Tags copy with a click.
import { toast } from "./comfy.js";
import { copyText, el, floating, formatBytes } from "./dom.js";
import { BASE_TO_LAYOUT, layoutForBlocks, layoutIds } from "./blocks.js";
import { loraEnergy, loraHash, loraInfo, loraTriggerWords, pinTriggerWords, previewURL } from "./server.js";

export const BASE_LABELS = {
  sd1: "SD1", sd2: "SD2", sdxl: "SDXL", sd3: "SD3", flux: "Flux", flux2: "Flux.2",
};

export const baseLabel = (base) => (base ? BASE_LABELS[base] ?? base.toUpperCase() : "?");

export async function openInfo(name) {
  const body = el("div.ld-info-body", {}, el("div.ld-muted", {}, "Reading the file header…"));
  const closeButton = el("button.ld-btn.ld-close", { title: "Close", "aria-label": "Close" }, "✕");
  const dialog = el("div.ld-info.ld-floating", { role: "dialog", "aria-label": `LoRA info: ${name}` },
    el("div.ld-info-head", {}, el("span.ld-info-title", {}, name.split("/").pop()), closeButton), body);
  const backdrop = el("div.ld-backdrop", {}, dialog);
  const { close } = floating(backdrop);
  backdrop.addEventListener("pointerdown", (e) => {
    if (e.target === backdrop) close();
  });
  closeButton.addEventListener("click", close);

  let info;
  try {
    info = await loraInfo(name);
  } catch (e) {
    body.replaceChildren(el("div.ld-error", {}, `Cannot read ${name}: ${e.message}`));
    return { close };
  }
  if (info.error) {
    body.replaceChildren(el("div.ld-error", {}, info.error));
    return { close };
  }
  const hashCell = el("span.ld-hash", {}, info.sha256 ? "" : "hashing…");
  const json = (v) => (v && typeof v === "object" ? JSON.stringify(v) : v);
  const facts = [
    ["File", name],
    ["Size", formatBytes(info.size)],
    ["Format", info.format_label],
    ["Adapters", (info.adapter_kinds || []).join(", ")],
    ["Base model", baseText(info)],
    ["Text encoders", (info.text_encoders || []).join(", ")],
    ["Rank", (info.ranks || []).join(", ")],
    ["Alpha", (info.alphas || []).join(", ") || (info.ranks?.length ? "= rank (not stored)" : "")],
    ["Modules", info.modules !== undefined
      ? `${info.modules} (${info.text_encoder_modules} text encoder)` +
        (info.unused_tensors ? `, ${info.unused_tensors} tensors not understood` : "")
      : ""],
    ["Problem", info.problem],
    ["Resolution", (info.resolution || []).join("x")],
    ["Baked from", bakedFrom(info.baked_from)],
    ["Title", info.title],
    ["Trigger", info.trigger_phrase],
    ["Hashes", hashCell],
    ["Trained on", info.trained_on],
    ["Network", [info.network_module, json(Object.keys(info.network_args || {}).length ? info.network_args : null)]
      .filter(Boolean).join(" ")],
    ["Epochs", info.epochs],
    ["Steps", info.steps],
    ["Author", info.author],
    ["Description", info.description],
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  const table = el("table.ld-facts", {}, facts.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  const energy = el("div.ld-energy", {}, el("div.ld-tags-head", {}, "Block energy: reading the weights…"));
  const preview = info.preview
    ? el("img.ld-preview", { src: previewURL(name), alt: `Preview of ${name}`, loading: "lazy" })
    : null;
  body.replaceChildren(...[preview, table, triggerSection(name), energy, tagSection(info.tags || [])].filter(Boolean));
  loraEnergy(name).then((e) => energy.replaceChildren(...energyPicture(e)),
    (e) => energy.replaceChildren(el("div.ld-muted", {}, `Block energy: ${e.message}`)));

  const showHash = ({ sha256, autov2 }) => {
    hashCell.replaceChildren(
      el("button.ld-chip.ld-copy-hash", { title: "Copy the AutoV2 short hash", onclick: () => copy(autov2) }, `AutoV2 ${autov2}`),
      el("button.ld-chip.ld-copy-hash", { title: "Copy the SHA-256", onclick: () => copy(sha256) },
        el("code.ld-sha", {}, sha256)));
  };
  if (info.sha256) showHash(info);
  else loraHash(name).then(showHash, (e) => (hashCell.textContent = `hash failed: ${e.message}`));
  return { close };
}

/** Bars in network order: each block's share of the LoRA's weight change (‖ΔW‖², LoRA modules). */
function energyPicture({ base, blocks, shares, measured, not_measured: notMeasured }) {
  const layout = BASE_TO_LAYOUT[base] ?? layoutForBlocks(blocks ?? Object.keys(shares)) ?? "sd1";
  const ids = layoutIds(layout);
  const top = Math.max(...ids.map((id) => shares[id] ?? 0), 1e-9);
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const w = 560;
  const h = 70;
  const step = w / ids.length;
  svg.setAttribute("viewBox", `0 0 ${w} ${h + 14}`);
  svg.setAttribute("class", "ld-energy-svg");
  ids.forEach((id, i) => {
    const share = shares[id] ?? 0;
    const bar = document.createElementNS(ns, "rect");
    const bh = Math.max(share > 0 ? 2 : 0, (share / top) * h);
    bar.setAttribute("x", String(i * step + 1));
    bar.setAttribute("y", String(h - bh));
    bar.setAttribute("width", String(Math.max(1, step - 2)));
    bar.setAttribute("height", String(bh));
    bar.setAttribute("class", `ld-energy-bar ld-energy-${id.replace(/\d+$/, "")}`);
    const title = document.createElementNS(ns, "title");
    title.textContent = `${id}: ${(share * 100).toFixed(1)}%`;
    bar.append(title);
    svg.append(bar);
    const chain = !id.startsWith("IN") && !id.startsWith("OUT") && id !== "M00" && id !== "BASE";
    if (chain ? i % 6 === 0 || id.endsWith("00") : true) {
      const label = document.createElementNS(ns, "text");
      label.setAttribute("x", String(i * step + step / 2));
      label.setAttribute("y", String(h + 11));
      label.setAttribute("class", "ld-energy-label");
      label.textContent = chain ? id : id.replace(/^(IN|OUT|M)0?/, "$1").replace(/^(IN|OUT)/, (m) => m[0]);
      svg.append(label);
    }
  });
  const strongest = Object.entries(shares).sort((a, b) => b[1] - a[1]).slice(0, 3)
    .map(([id, s]) => `${id} ${(s * 100).toFixed(0)}%`).join(", ");
  return [
    el("div.ld-tags-head", {}, `Block energy — strongest: ${strongest || "none"}`,
      el("span.ld-muted", {}, `${measured} modules measured` + (notMeasured ? `, ${notMeasured} not` : ""))),
    svg,
  ];
}

/** The LoRA's trigger words (what its trigger_words outputs give) and a field to pin your own. */
function triggerSection(name) {
  const words = el("span.ld-trigger-words", {}, "reading…");
  const input = el("input.ld-pin-input", { type: "text", placeholder: "words to pin, comma separated",
    "aria-label": "Pinned trigger words" });
  const status = el("span.ld-muted.ld-pin-status", {});
  const show = (found) => {
    words.textContent = found.words.length ? found.words.join(", ") : "none found";
    words.title = Object.entries(found.sources).map(([source, list]) => `${source}: ${list.join(", ")}`).join("\n");
    input.value = (found.pinned || []).join(", ");
  };
  const save = el("button.ld-btn.ld-pin-save", { title: "Save the pinned words (empty unpins)", onclick: async () => {
    const pinned = input.value.split(",").map((w) => w.trim()).filter(Boolean);
    status.textContent = "saving…";
    try {
      await pinTriggerWords(name, pinned);
      show(await loraTriggerWords(name));
      status.textContent = "saved";
    } catch (e) {
      status.textContent = `not saved: ${e.message}`;
    }
  } }, "Pin");
  loraTriggerWords(name).then(show, (e) => { words.textContent = e.message; });
  return el("div.ld-triggers", {}, el("div.ld-tags-head", {}, "Trigger words: ", words),
    el("div.ld-pin-row", {}, input, save, status));
}

function bakedFrom(sources) {
  if (!sources?.length) return "";
  return sources.map((s) => `${s.name} (model ${s.strength_model}, clip ${s.strength_clip}` +
    (s.blocks ? `, blocks ${s.blocks}` : "") + (s.autov2 ? `, AutoV2 ${s.autov2}` : "") + ")").join("; ");
}

function baseText(info) {
  const base = info.base ? baseLabel(info.base) : "unknown";
  if (info.base_claimed && info.base_claimed !== info.base) return `${base} (its metadata says ${baseLabel(info.base_claimed)})`;
  return base;
}

function tagSection(tags) {
  if (!tags.length) return el("div.ld-muted", {}, "No training tags in this file.");
  const shown = tags.slice(0, 60).map(({ tag, count }) => [tag, count]);
  return el("div.ld-tags-section", {},
    el("div.ld-tags-head", {}, `Training tags (${tags.length}) — click to copy`,
      el("button.ld-btn.ld-copy-tags", {
        title: "Copy the tags shown, most used first",
        onclick: () => copy(shown.map(([t]) => t).join(", ")),
      }, "Copy all")),
    el("div.ld-tags", {}, shown.map(([tag, count]) =>
      el("button.ld-chip.ld-tag", { title: `used ${count}×; click to copy`, onclick: () => copy(tag) },
        tag, el("span.ld-count", {}, String(count))))));
}

async function copy(text) {
  if (await copyText(text)) toast("success", "Copied", text.length > 80 ? `${text.slice(0, 77)}…` : text);
}
