// The compact block editor: one slider per slot of the network, laid out in the network's shape (a UNet's
// down path on the left, its up path on the right, the middle block below; a DiT's chains as grids), a
// preset picker, and the spec text.
//
// The server's grammar is the only one (POST /loradeck/spec): it says which slots the layout has, each
// slot's ratio, its own reading of the spec, and whether plain per-slot sliders hold all of it. The editor
// never parses a spec. It writes one in two trivial forms only:
// - when sliders hold the whole spec, moving one rewrites it as `default=d, ID=value, …` (slots off the
//   default, exact values), which means the same on this model;
// - when they do not (element rules, values beyond the sliders), moving one appends `; ID=value` after the
//   spec, which keeps the rest of its meaning; "Replace with sliders" rewrites it only when asked.
// A spec the server cannot read leaves the sliders locked; a preset or Reset then asks before replacing it.
import { el } from "./dom.js";
import { readSpec } from "./server.js";

const round = (x) => Math.round(x * 1000) / 1000;
const num = (x) => String(x); // shortest text that reads back as the same double, in JS and in Python

/** The spec of plain slider values: the default first when it is not 1, then each slot off the default. */
function sliderSpec(ids, values, fallback) {
  const parts = fallback === 1 ? [] : [`default=${num(fallback)}`];
  for (const id of ids) if (values.get(id) !== fallback) parts.push(`${id}=${num(values.get(id))}`);
  return parts.join(", ");
}

/** `base` untouched, then the slider overrides as one more statement (later assignments win). */
function withOverrides(base, ids, overrides) {
  const set = ids.filter((id) => overrides.has(id)).map((id) => `${id}=${num(overrides.get(id))}`).join(", ");
  return base.trim() ? `${base}; ${set}` : set;
}

/**
 * @param {object} opts
 * @param {string} opts.spec      the row's block spec
 * @param {string?} opts.lora     the row's LoRA (its base model picks the layout; "lora" uses its own blocks)
 * @param {string?} opts.layout   a layout chosen before (sd1 | sdxl | flux | lora), else the server picks
 * @param {Map?}   opts.energy    block id -> share of the LoRA's weight change (0..1), when known
 * @param {(spec: string, layout: string) => void} opts.onChange
 * @param {() => void} [opts.onDraw]  called when the editor's size may have changed
 */
export function blockEditor({ spec, lora, layout, energy, onChange, onDraw = () => {} }) {
  let current = spec || "";
  let answer = null; // the server's latest reading of `current`
  let asked = 0; // only the answer to the latest question counts
  let values = new Map();
  let overrides = null; // {base, map} while sliders add overrides to a spec they cannot hold
  let pending = null; // an action waiting for the user's yes
  const root = el("div.ld-editor", { dataset: { layout: layout ?? "", mode: "loading" } });
  const reading = el("div.ld-reading");
  const message = el("div.ld-editor-msg");
  const ask = el("div.ld-editor-ask");
  const replace = el("button.ld-btn.ld-replace", { onclick: () => replaceWithSliders() }, "Replace with sliders");
  // A textarea, not an input: an input drops the new lines that separate statements.
  const text = el("textarea.ld-spec", {
    spellcheck: false, rows: 1, placeholder: "all blocks 1.0 (e.g. IN04=0, OUT05=0.5)",
    title: "Block-weight spec: named assignments, an A1111 preset name or vector, element rules "
      + "(Enter applies it, Shift+Enter starts a new line)",
  });
  const fitText = () => (text.rows = Math.min(6, Math.max(1, text.value.split("\n").length)));
  text.value = current;
  fitText();
  const cells = new Map();
  const strongest = energy?.size ? Math.max(...energy.values(), 1e-9) : 1;
  const layoutPicker = el("select.ld-select.ld-layout", { title: "Network shape" });
  const presetPicker = el("select.ld-select.ld-preset", { title: "Preset" });
  let grid = el("div.ld-grid");
  let drawn = ""; // the slot list the grid shows

  async function read(specText, { keepOverrides = false } = {}) {
    const question = ++asked;
    let reply;
    try {
      reply = await readSpec({ spec: specText, layout: root.dataset.layout || null, lora: lora || null });
    } catch (e) {
      reply = { error: `the server could not read the spec: ${e.message}`, transport: true };
    }
    if (question !== asked) return;
    if (!keepOverrides) overrides = null;
    show(reply);
  }

  function show(reply) {
    if (!reply.transport) answer = reply;
    if (answer && answer.ids.join() !== drawn) draw();
    if (answer) root.dataset.layout = answer.layout;
    const mode = reply.error ? "error" : reply.sliders && !overrides ? "sliders" : "overrides";
    root.dataset.mode = mode;
    if (!reply.error) values = new Map(Object.entries(reply.ratios));
    for (const [id, c] of cells) c.show(mode === "error");
    message.replaceChildren(reply.error
      ? el("span.ld-editor-error", { dataset: { position: reply.position ?? "" } },
        `${reply.error}. Kept as typed; the sliders are locked until the server can read it.`)
      : mode === "overrides"
        ? el("span.ld-editor-note", {}, `Sliders cannot hold all of this spec (${reply.not_sliders || "overrides"}): `
          + "moving one adds an override after it. ", replace)
        : "");
    reading.textContent = reply.error ? "" : reply.reading;
    onDraw();
  }

  function emit(specText) {
    current = specText;
    text.value = specText;
    fitText();
    onChange(specText, root.dataset.layout);
  }

  function slid(id, value) {
    if (!answer || root.dataset.mode === "error" || root.dataset.mode === "loading") return;
    values.set(id, value);
    if (root.dataset.mode === "sliders") {
      emit(sliderSpec(answer.ids, values, answer.default));
      read(current);
    } else {
      overrides ??= { base: current, map: new Map() };
      overrides.map.set(id, value);
      emit(withOverrides(overrides.base, answer.ids, overrides.map));
      read(current, { keepOverrides: true });
    }
  }

  function replaceWithSliders() {
    const [lo, hi] = answer.slider_range;
    const clamp = (v) => Math.min(hi, Math.max(lo, v));
    const clamped = new Map([...values].map(([id, v]) => [id, clamp(v)]));
    emit(sliderSpec(answer.ids, clamped, clamp(answer.default)));
    read(current);
  }

  /** Replace the spec with `next` at once when sliders hold all of it; otherwise ask first. */
  function replaceSpec(next, what) {
    if (root.dataset.mode === "sliders" || !current.trim()) {
      emit(next);
      read(current);
      return;
    }
    pending = () => {
      emit(next);
      read(current);
    };
    const shown = current.length > 60 ? `${current.slice(0, 57)}…` : current;
    ask.replaceChildren(el("span", {}, `Replace “${shown}” with ${what}? Sliders cannot show all of it.`),
      el("button.ld-btn.ld-ask-yes", { onclick: () => answerAsk(true) }, "Replace"),
      el("button.ld-btn.ld-ask-no", { onclick: () => answerAsk(false) }, "Keep"));
    onDraw();
  }

  function answerAsk(yes) {
    const action = pending;
    pending = null;
    ask.replaceChildren();
    if (yes && action) action();
    onDraw();
  }

  function cell(id) {
    const [lo, hi] = answer.slider_range;
    const slider = el("input.ld-slider", { type: "range", min: lo, max: hi, step: 0.05, value: 1 });
    const number = el("span.ld-cell-value");
    const box = el("div.ld-cell", { dataset: { block: id }, title: `${id}: double-click to reset to 1` },
      el("span.ld-cell-id", {}, id), slider, number);
    const share = energy?.get(id);
    if (share !== undefined) {
      box.style.setProperty("--ld-energy", `${Math.round((share / strongest) * 100)}%`);
      box.title = `${id}: ${(share * 100).toFixed(1)}% of this LoRA's weight change; double-click to reset to 1`;
    }
    const show = (locked) => {
      const v = values.get(id) ?? 1;
      slider.value = v;
      slider.disabled = locked;
      number.textContent = locked ? "?" : round(v).toFixed(2);
      box.classList.toggle("ld-off", !locked && v === 0);
      box.classList.toggle("ld-changed", !locked && v !== 1);
    };
    slider.addEventListener("input", () => {
      number.textContent = round(Number(slider.value)).toFixed(2);
    });
    slider.addEventListener("change", () => slid(id, Number(slider.value)));
    box.addEventListener("dblclick", () => !slider.disabled && slid(id, 1));
    cells.set(id, { show });
    show(true);
    return box;
  }

  function draw() {
    cells.clear();
    const A = answer;
    const parts = [el("div.ld-grid-text", {}, [...A.text, ...A.extra].map(cell))];
    if (A.kind === "chains") {
      for (const [title, chain] of A.chains) {
        parts.push(el("div.ld-chain-title", {}, title), el("div.ld-chain", {}, chain.map(cell)));
      }
    } else {
      // Down path top to bottom on the left, up path bottom to top on the right: the U of the UNet.
      const rows = Math.max(A.down.length, A.up.length);
      const unet = el("div.ld-unet", { style: { gridTemplateRows: `repeat(${rows + 1}, auto)` } });
      const place = (id, area) => {
        const c = cell(id);
        c.style.gridArea = area;
        unet.append(c);
      };
      A.down.forEach((id, i) => place(id, `${i + 1} / 1`));
      A.up.forEach((id, i) => place(id, `${rows - i} / 3`));
      A.mid.forEach((id) => place(id, `${rows + 1} / 2`));
      parts.push(unet);
    }
    const next = el("div.ld-grid", {}, parts);
    grid.replaceWith(next);
    grid = next;
    drawn = A.ids.join();
    layoutPicker.replaceChildren(...A.layouts.map((L) => el("option", { value: L.key, selected: L.key === A.layout }, L.label)));
    const own = A.presets.filter((p) => !p.user);
    const user = A.presets.filter((p) => p.user);
    presetPicker.replaceChildren(el("option", { value: "" }, "Preset…"),
      ...own.map((p) => el("option", { value: p.name }, p.title)),
      user.length ? el("optgroup", { label: "Your presets (block_presets.txt)" },
        user.map((p) => el("option", { value: p.name }, p.title))) : null);
  }

  layoutPicker.addEventListener("change", () => {
    root.dataset.layout = layoutPicker.value;
    onChange(current, layoutPicker.value); // the spec stays as it is; only the shape it is read on changes
    read(current);
  });
  presetPicker.addEventListener("change", () => {
    const preset = answer?.presets.find((p) => p.name === presetPicker.value);
    presetPicker.value = "";
    if (preset) replaceSpec(preset.spec, `the preset ${preset.title}`);
  });
  text.addEventListener("change", () => {
    emit(text.value.trim());
    read(current);
  });
  text.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey) {
      e.preventDefault();
      text.blur();
    }
  });
  text.addEventListener("input", fitText);
  const reset = el("button.ld-btn.ld-reset", {
    title: "All blocks back to 1.0", onclick: () => replaceSpec("", "all blocks at 1.0"),
  }, "Reset");
  root.append(el("div.ld-editor-bar", {}, layoutPicker, presetPicker, reset), grid, text, message, ask, reading);
  read(current);
  return root;
}
