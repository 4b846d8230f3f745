// The LoraDeckStack rows widget. Its value is the list of row objects
// {on, lora, strength, clip_strength, blocks[, sha256, size, schedule]}; the frontend stores that value in the workflow
// and sends it in the API prompt as {"__value__": [...]}, so rows travel with every save, export,
// paste, subgraph and undo step without any code of ours on those paths.
import { graphChanged, toast } from "./comfy.js";
import { el, icon } from "./dom.js";
import { blockEditor } from "./editor.js";
import { baseLabel, openInfo } from "./info.js";
import { openPicker } from "./picker.js";
import { scheduleIndicator } from "./schedule.js";
import { findByHash, loraEnergy, loraHash, loraInfo, loraNames } from "./server.js";

export const ROWS_TYPE = "LORADECK_ROWS";

const number = (value, fallback) => (Number.isFinite(Number(value)) && value !== null && value !== "" ? Number(value) : fallback);

/** Rows from any stored form: a list, {"__value__": list}, or the list as JSON text. Unknown keys are kept. */
export function normaliseRows(value) {
  if (typeof value === "string") {
    try {
      value = JSON.parse(value || "[]");
    } catch {
      value = [];
    }
  }
  if (value && !Array.isArray(value) && typeof value === "object") value = value.__value__ ?? value.rows ?? [];
  if (!Array.isArray(value)) return [];
  return value
    .filter((r) => r && typeof r === "object")
    .map((r) => {
      const row = {
        ...r,
        on: r.on !== false,
        lora: String(r.lora ?? r.lora_name ?? ""),
        strength: number(r.strength, 1),
        clip_strength: r.clip_strength === null || r.clip_strength === undefined ? null : number(r.clip_strength, 1),
        blocks: typeof r.blocks === "string" ? r.blocks : "",
      };
      delete row.lora_name;
      if (r.schedule && typeof r.schedule === "object") row.schedule = JSON.parse(JSON.stringify(r.schedule)); // our own copy
      return row;
    });
}

// A copy the frontend may keep (an undo state, a clipboard) while the row is edited on.
const copyRow = (r) => (r.schedule && typeof r.schedule === "object"
  ? { ...r, schedule: JSON.parse(JSON.stringify(r.schedule)) } : { ...r });

export function rowsWidget(node, inputName) {
  let rows = [];
  let missing = new Set();
  let editing = null; // the row whose block editor is open
  let lastRun = new Map(); // LoRA name -> {base, note} from the last run of the node this stack feeds
  const layoutChoice = new WeakMap(); // row -> network shape the user chose in its editor (not saved)
  const content = el("div.ld-content");
  const root = el("div.loradeck-rows", {}, content);

  const widget = node.addDOMWidget(inputName, ROWS_TYPE, root, {
    getValue: () => rows.map(copyRow),
    setValue: (value) => {
      rows = normaliseRows(value);
      editing = null;
      render();
      checkMissing();
    },
    getMinHeight: () => height(),
    socketless: true,
  });

  function height() {
    const measured = content.offsetHeight;
    if (measured) return measured + 6;
    return 70 + rows.length * 30 + (editing ? 380 : 0) + missing.size * 26;
  }

  // Size the node to its rows now (layout is synchronous once the widget is shown), so a change and the
  // node's new size are one undo step. Until the rows can be measured (just created, or being restored
  // by undo/redo), leave the size alone: a guess would be a change of its own and cost the redo queue.
  function fit(tries = 30) {
    if (!content.isConnected || content.offsetHeight === 0) {
      if (tries > 0) requestAnimationFrame(() => fit(tries - 1));
      return;
    }
    const [w, h] = node.computeSize();
    if (Math.abs(node.size[1] - h) > 1 || node.size[0] < w) node.setSize([Math.max(node.size[0], w), h]);
    node.setDirtyCanvas(true, true);
  }

  function changed({ rerender = false } = {}) {
    if (rerender) render();
    graphChanged(node);
  }

  // The row remembers its file's SHA-256 so a moved or renamed file can be found again. A file hashed
  // before (or small) answers at once and the hash lands in the same undo step as the pick; a big new
  // file is hashed in the background and its hash joins the next saved state.
  async function setLora(row, name, sha256 = null) {
    row.lora = name;
    missing.delete(row);
    if (sha256) {
      row.sha256 = sha256;
      return;
    }
    delete row.sha256;
    delete row.size;
    const hashed = loraHash(name).then((h) => {
      if (row.lora !== name) return;
      row.sha256 = h.sha256;
      if (Number.isInteger(h.size)) row.size = h.size; // lets Find by hash read only files of this size
    }, () => {});
    await Promise.race([hashed, new Promise((resolve) => setTimeout(resolve, 500))]);
  }

  async function checkMissing() {
    let names;
    try {
      names = await loraNames();
    } catch {
      return;
    }
    const now = new Set(rows.filter((r) => r.lora && !names.has(r.lora)));
    const same = now.size === missing.size && [...now].every((r) => missing.has(r));
    missing = now;
    if (!same) render();
  }

  async function relink(row, anchor) {
    let matches = [];
    if (row.sha256) {
      try {
        matches = await findByHash(row.sha256, row.size ?? null);
      } catch (e) {
        toast("warn", "LoRA Deck", `Search by hash failed: ${e.message}`);
      }
    }
    const old = row.lora;
    if (matches.length === 1) {
      await setLora(row, matches[0], row.sha256);
      toast("success", "LoRA re-linked", `${old} → ${matches[0]} (same SHA-256)`);
      changed({ rerender: true });
      return;
    }
    const note = matches.length
      ? `${matches.length} files have the SHA-256 of ${old}:`
      : row.sha256 ? `No file has the SHA-256 of ${old}; pick its replacement` : `Pick the file to use for ${old}`;
    openPicker({
      anchor, current: old, only: matches.length ? matches : null, note,
      onPick: async (name) => {
        await setLora(row, name);
        changed({ rerender: true });
      },
    });
  }

  function addRow(anchor) {
    openPicker({
      anchor, current: rows.at(-1)?.lora,
      onPick: async (name) => {
        const row = { on: true, lora: "", strength: 1, clip_strength: null, blocks: "" };
        await setLora(row, name);
        rows.push(row);
        changed({ rerender: true });
      },
    });
  }

  function startDrag(event, from) {
    event.preventDefault();
    event.stopPropagation();
    const handle = event.currentTarget;
    handle.setPointerCapture(event.pointerId);
    const rowEls = [...content.querySelectorAll(".ld-row")];
    rowEls[from].classList.add("ld-dragging");
    let to = from;
    const move = (e) => {
      to = rowEls.filter((r, i) => i !== from && e.clientY > r.getBoundingClientRect().top + r.offsetHeight / 2).length;
      rowEls.forEach((r, i) => r.classList.toggle("ld-drop-before", i !== from && i === (to >= from ? to + 1 : to)));
      content.classList.toggle("ld-drop-end", to === rows.length - 1 && from !== rows.length - 1);
    };
    const up = () => {
      handle.removeEventListener("pointermove", move);
      content.classList.remove("ld-drop-end");
      if (to !== from) {
        rows.splice(to, 0, rows.splice(from, 1)[0]);
        changed({ rerender: true });
      } else render();
    };
    handle.addEventListener("pointermove", move);
    handle.addEventListener("pointerup", up, { once: true });
    handle.addEventListener("pointercancel", up, { once: true });
  }

  function strengthInput(row, key, title) {
    const input = el(`input.ld-num.ld-${key === "strength" ? "strength" : "clip"}`, {
      type: "number", step: 0.05, min: -100, max: 100, value: row[key], title,
    });
    input.addEventListener("input", () => {
      if (input.value === "" || !Number.isFinite(Number(input.value))) return;
      row[key] = Number(input.value);
    });
    input.addEventListener("change", () => {
      row[key] = number(input.value, row[key]);
      input.value = row[key];
      changed();
    });
    return input;
  }

  function rowView(row, index) {
    const name = row.lora ? row.lora.split("/").pop().replace(/\.(safetensors|sft|ckpt|pt|pth|bin)$/i, "") : "Choose a LoRA…";
    const badge = el("span.ld-badge", { title: "Base model" }, "…");
    if (row.lora && !missing.has(row)) {
      loraInfo(row.lora).then((info) => {
        badge.textContent = baseLabel(info.base);
        badge.dataset.base = info.base ?? "";
        badge.title = `Base model ${baseLabel(info.base)} · ${(info.adapter_kinds || []).join(", ")}` +
          (info.ranks?.length ? ` · rank ${info.ranks.join("/")}` : "");
      }, () => (badge.textContent = "!"));
    } else badge.textContent = row.lora ? "—" : "";
    const linked = row.clip_strength === null;
    const line = el("div.ld-row-line", {},
      el("span.ld-handle", { title: "Drag to reorder", onpointerdown: (e) => startDrag(e, index) }, icon("grip")),
      el("input.ld-on", {
        type: "checkbox", checked: row.on, title: "Use this LoRA",
        onchange: (e) => {
          row.on = e.target.checked;
          changed({ rerender: true });
        },
      }),
      el("button.ld-lora", {
        title: row.lora || "Choose a LoRA",
        onclick: (e) => openPicker({
          anchor: e.currentTarget, current: row.lora,
          onPick: async (picked) => {
            await setLora(row, picked);
            changed({ rerender: true });
          },
        }),
      }, name),
      badge,
      scheduleIndicator(row, (next) => {
        if (next === undefined) delete row.schedule;
        else row.schedule = next;
        changed({ rerender: true });
      }),
      strengthInput(row, "strength", linked ? "Strength (model and CLIP)" : "Model strength"),
      el("button.ld-icon.ld-link", {
        title: linked ? "Set a separate CLIP strength" : "Use the model strength for CLIP too",
        "aria-pressed": linked ? "false" : "true",
        onclick: () => {
          row.clip_strength = linked ? row.strength : null;
          changed({ rerender: true });
        },
      }, icon(linked ? "link" : "unlink")),
      linked ? null : strengthInput(row, "clip_strength", "CLIP strength"),
      el("button.ld-icon.ld-blocks" + (row.blocks ? ".ld-set" : ""), {
        title: row.blocks ? `Block weights: ${row.blocks}` : "Block weights (all 1.0)",
        onclick: () => {
          editing = editing === row ? null : row;
          render();
        },
      }, icon("blocks")),
      el("button.ld-icon.ld-info-btn", { title: "LoRA info", disabled: !row.lora, onclick: () => openInfo(row.lora) }, icon("info")),
      el("button.ld-icon.ld-remove", {
        title: "Remove this row",
        onclick: () => {
          rows.splice(rows.indexOf(row), 1);
          if (editing === row) editing = null;
          changed({ rerender: true });
        },
      }, icon("close")));
    const view = el("div.ld-row" + (row.on ? "" : ".ld-row-off") + (missing.has(row) ? ".ld-row-missing" : ""),
      { dataset: { index } }, line);
    const warning = lastRun.get(row.lora)?.note;
    if (warning && row.on) {
      view.classList.add("ld-row-warn");
      badge.classList.add("ld-badge-warn");
      view.append(el("div.ld-warn", {}, `Last run: ${warning}`));
    }
    if (missing.has(row)) {
      view.append(el("div.ld-missing", {}, el("span", {}, `Missing: ${row.lora}`),
        el("button.ld-btn.ld-relink", { onclick: (e) => relink(row, e.currentTarget) },
          row.sha256 ? "Find by hash" : "Re-link…")));
    }
    if (editing === row) view.append(editorHost(row));
    return view;
  }

  function editorHost(row) {
    const host = el("div.ld-editor-host", {}, el("div.ld-muted", {}, "…"));
    const lora = row.lora && !missing.has(row) ? row.lora : null;
    const build = (energy) => {
      host.replaceChildren(blockEditor({
        spec: row.blocks,
        lora,
        layout: layoutChoice.get(row),
        energy: energy ? new Map(Object.entries(energy.shares)) : null,
        onDraw: () => fit(),
        onChange: (spec, layout) => {
          layoutChoice.set(row, layout);
          row.blocks = spec;
          const button = content.querySelectorAll(".ld-row")[rows.indexOf(row)]?.querySelector(".ld-blocks");
          button?.classList.toggle("ld-set", !!spec);
          if (button) button.title = spec ? `Block weights: ${spec}` : "Block weights (all 1.0)";
          changed();
        },
      }));
      fit();
    };
    if (lora) loraEnergy(lora).then(build, () => build(null));
    else build(null);
    return host;
  }

  function render() {
    const all = rows.length > 0 && rows.every((r) => r.on);
    const toggleAll = el("input.ld-on-all", {
      type: "checkbox", checked: all, title: all ? "Turn every row off" : "Turn every row on",
      onchange: () => {
        const on = !rows.every((r) => r.on);
        rows.forEach((r) => (r.on = on));
        changed({ rerender: true });
      },
    });
    toggleAll.indeterminate = !all && rows.some((r) => r.on);
    const active = rows.filter((r) => r.on && r.lora).length;
    content.replaceChildren(
      el("div.ld-head", {}, toggleAll,
        el("span.ld-count-label", {}, rows.length ? `${active} of ${rows.length} LoRAs on` : "No LoRAs yet"),
        el("span.ld-head-strength", {}, rows.length ? "strength" : "")),
      ...rows.map(rowView),
      el("div.ld-foot", {},
        el("button.ld-btn.ld-add", { onclick: (e) => addRow(e.currentTarget) }, "+ Add LoRA")));
    fit();
  }

  /** Show what the server said about these LoRAs in the last run (base model mismatches). */
  widget.showRun = (entries) => {
    lastRun = new Map(entries.map((e) => [e.lora, e]));
    render();
  };

  render();
  checkMissing();
  return widget;
}
