// The LoRA info panel: what the file says about itself (format, adapters, base model, rank/alpha,
// resolution, training tags with counts), its size and its hashes. Tags copy with a click.
import { toast } from "./comfy.js";
import { copyText, el, floating, formatBytes } from "./dom.js";
import { loraHash, loraInfo } from "./server.js";

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
  const facts = [
    ["File", name],
    ["Size", formatBytes(info.size)],
    ["Format", [info.file_type, info.family].filter(Boolean).join(" · ")],
    ["Adapters", (info.adapters || []).join(", ")],
    ["Base model", baseText(info)],
    ["Rank", (info.ranks || []).join(", ")],
    ["Alpha", (info.alphas || []).join(", ") || (info.ranks?.length ? "= rank (not stored)" : "")],
    ["Modules", info.modules !== undefined
      ? `${info.modules} (${info.text_encoder_modules} text encoder)` +
        (info.unused_tensors ? `, ${info.unused_tensors} tensors not understood` : "")
      : ""],
    ["Resolution", info.resolution],
    ["Title", info.title],
    ["Trigger", info.trigger],
    ["Hashes", hashCell],
    ...Object.entries(info.training || {}).map(([k, v]) => [k.replace(/_/g, " "), v]),
  ].filter(([, v]) => v !== undefined && v !== null && v !== "");
  const table = el("table.ld-facts", {}, facts.map(([k, v]) => el("tr", {}, el("th", {}, k), el("td", {}, v))));
  body.replaceChildren(table, tagSection(info.tags || []));
  if (info.note) body.append(el("div.ld-muted", {}, info.note));

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

function baseText(info) {
  const base = info.base ? baseLabel(info.base) : "unknown";
  if (info.base_claimed && info.base_claimed !== info.base) return `${base} (its metadata says ${baseLabel(info.base_claimed)})`;
  return base;
}

function tagSection(tags) {
  if (!tags.length) return el("div.ld-muted", {}, "No training tags in this file.");
  const shown = tags.slice(0, 60);
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
