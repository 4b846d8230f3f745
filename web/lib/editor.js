// The compact block editor: one slider per network block, laid out in the network's shape
// (a UNet's down path on the left, its up path on the right, the middle block below; a DiT's chains
// as grids), a preset picker, and the spec text it writes.
import { el } from "./dom.js";
import { LAYOUTS, formatSpec, layoutIds, parseSpec, presets, round } from "./blocks.js";
import { blockPresets } from "./server.js";

const MIN = -1;
const MAX = 2;

/**
 * @param {object} opts
 * @param {string} opts.spec      the row's block spec
 * @param {string} opts.layout    sd1 | sdxl | flux
 * @param {Map?}   opts.energy    block id -> share of the LoRA's weight change (0..1), when known
 * @param {(spec: string, layout: string) => void} opts.onChange
 */
export function blockEditor({ spec, layout, energy, onChange }) {
  let current = layout;
  let values = parseSpec(spec, current).values;
  const root = el("div.ld-editor", { dataset: { layout } });
  const message = el("div.ld-editor-msg");
  const text = el("input.ld-spec", {
    type: "text", spellcheck: false, value: spec || "", placeholder: "all blocks 1.0 (e.g. IN04=0, OUT05=0.5)",
    title: "Block-weight spec: named assignments, an A1111 preset name or vector",
  });
  const cells = new Map();
  const strongest = energy?.size ? Math.max(...energy.values(), 1e-9) : 1;

  const layoutPicker = el("select.ld-select.ld-layout", { title: "Network shape" },
    Object.entries(LAYOUTS).map(([key, L]) => el("option", { value: key, selected: key === current }, L.label)));
  const presetPicker = el("select.ld-select.ld-preset", { title: "Preset" });

  let userPresets = {};
  function fillPresets() {
    const user = Object.keys(userPresets);
    presetPicker.replaceChildren(el("option", { value: "" }, "Preset…"),
      ...presets(current).map((p) => el("option", { value: p.name }, p.title)),
      user.length ? el("optgroup", { label: "Your presets (block_presets.txt)" },
        user.map((name) => el("option", { value: `user:${name}` }, name))) : null);
  }
  blockPresets().then((p) => {
    userPresets = p.user ?? {};
    fillPresets();
  });

  function applyText(specText) {
    const parsed = parseSpec(specText, current);
    message.textContent = parsed.error ? `${parsed.error}; kept as text for the server to read` : "";
    values = parsed.values;
    for (const [id, c] of cells) {
      c.slider.value = values.get(id);
      c.show();
    }
  }

  function emit() {
    const out = formatSpec(values, current);
    text.value = out;
    message.textContent = "";
    onChange(out, current);
  }

  function cell(id) {
    const slider = el("input.ld-slider", { type: "range", min: MIN, max: MAX, step: 0.05, value: values.get(id) });
    const number = el("span.ld-cell-value");
    const box = el("div.ld-cell", { dataset: { block: id }, title: `${id}: double-click to reset to 1` },
      el("span.ld-cell-id", {}, id), slider, number);
    const share = energy?.get(id);
    if (share !== undefined) {
      box.style.setProperty("--ld-energy", `${Math.round((share / strongest) * 100)}%`);
      box.title = `${id}: ${(share * 100).toFixed(1)}% of this LoRA's weight change; double-click to reset to 1`;
    }
    const show = () => {
      const v = values.get(id);
      number.textContent = round(v).toFixed(2);
      box.classList.toggle("ld-off", v === 0);
      box.classList.toggle("ld-changed", v !== 1);
    };
    slider.addEventListener("input", () => {
      values.set(id, Number(slider.value));
      show();
    });
    slider.addEventListener("change", emit);
    box.addEventListener("dblclick", () => {
      values.set(id, 1);
      slider.value = 1;
      show();
      emit();
    });
    cells.set(id, { slider, show });
    show();
    return box;
  }

  function grid() {
    cells.clear();
    const L = LAYOUTS[current];
    const parts = [el("div.ld-grid-text", {}, L.text.map(cell))];
    if (L.chains) {
      for (const [name, chain] of L.chains) {
        parts.push(el("div.ld-chain-title", {}, `${name} blocks`), el("div.ld-chain", {}, chain.map(cell)));
      }
    } else {
      // Down path top to bottom on the left, up path bottom to top on the right: the U of the UNet.
      const rows = Math.max(L.down.length, L.up.length);
      const unet = el("div.ld-unet", { style: { gridTemplateRows: `repeat(${rows + 1}, auto)` } });
      L.down.forEach((id, i) => {
        const c = cell(id);
        c.style.gridArea = `${i + 1} / 1`;
        unet.append(c);
      });
      L.up.forEach((id, i) => {
        const c = cell(id);
        c.style.gridArea = `${rows - i} / 3`;
        unet.append(c);
      });
      L.mid.forEach((id) => {
        const c = cell(id);
        c.style.gridArea = `${rows + 1} / 2`;
        unet.append(c);
      });
      parts.push(unet);
    }
    return el("div.ld-grid", {}, parts);
  }

  let body = grid();

  function redraw() {
    const next = grid();
    body.replaceWith(next);
    body = next;
    root.dataset.layout = current;
  }

  layoutPicker.addEventListener("change", () => {
    current = layoutPicker.value;
    const parsed = parseSpec(text.value, current);
    values = parsed.values;
    message.textContent = parsed.error ?? "";
    fillPresets();
    redraw();
    onChange(text.value, current);
  });
  presetPicker.addEventListener("change", () => {
    if (presetPicker.value.startsWith("user:")) {
      const specText = userPresets[presetPicker.value.slice(5)] ?? "";
      presetPicker.value = "";
      text.value = specText;
      applyText(specText);
      onChange(specText, current);
      return;
    }
    const preset = presets(current).find((p) => p.name === presetPicker.value);
    presetPicker.value = "";
    if (!preset) return;
    values = new Map(preset.values);
    for (const [id, c] of cells) {
      c.slider.value = values.get(id);
      c.show();
    }
    emit();
  });
  text.addEventListener("change", () => {
    applyText(text.value);
    onChange(text.value.trim(), current);
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter") text.blur();
  });

  fillPresets();
  const reset = el("button.ld-btn.ld-reset", {
    title: "All blocks back to 1.0",
    onclick: () => {
      values = new Map(layoutIds(current).map((id) => [id, 1]));
      for (const [id, c] of cells) {
        c.slider.value = 1;
        c.show();
      }
      emit();
    },
  }, "Reset");
  root.append(el("div.ld-editor-bar", {}, layoutPicker, presetPicker, reset), body, text, message);
  const initial = parseSpec(spec, current);
  if (initial.error) message.textContent = `${initial.error}; kept as text for the server to read`;
  return root;
}
