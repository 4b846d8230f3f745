// A row's schedule: where in the sampling its LoRA acts and how its strength moves there. A row may carry
// `schedule` = {start, stop, unit, from, to, curve, keyframes, …}; no key (or null) means always on.
// This module draws the row's compact indicator and the editor that sets or clears a schedule.
// The editor rewrites only the fields the user changes: the others keep their stored form, and keys it
// does not know stay as they are. A value it cannot read is shown and kept, never replaced unasked.
import { el, floating, icon } from "./dom.js";

export const CURVES = ["linear", "ease_in", "ease_out", "ease_in_out", "hold"];
// The limits of loader/schedule.py, the grammar the backend enforces.
const MAX_KEYFRAMES = 100;
const MAX_STEP = 10000;
const MAX_MULTIPLIER = 100;
const FIELDS = ["start", "stop", "unit", "from", "to", "curve", "keyframes"];

const isPlain = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isNumber = (v) => typeof v === "number" && Number.isFinite(v);
export const hasSchedule = (row) => row.schedule !== undefined && row.schedule !== null;

/** The schedule's meaning with defaults filled in, or null when a known field holds what this UI cannot read. */
export function readSchedule(s) {
  if (!isPlain(s)) return null;
  const unit = s.unit ?? "fraction";
  const curve = s.curve ?? "linear";
  const optional = (v, fallback) => (v === undefined || v === null ? fallback : v);
  const view = { unit, curve, start: optional(s.start, 0), stop: optional(s.stop, null),
    from: optional(s.from, 1), to: optional(s.to, 1), keyframes: optional(s.keyframes, null) };
  const numbers = [view.start, view.from, view.to].every(isNumber) && (view.stop === null || isNumber(view.stop));
  const keyframes = view.keyframes === null || Number.isInteger(view.keyframes);
  if (!numbers || !keyframes || !["fraction", "steps"].includes(unit) || !CURVES.includes(curve)) return null;
  return view;
}

const percent = (x) => `${Math.round(x * 1000) / 10}%`;
const times = (x) => `×${Math.round(x * 100) / 100}`;

/** One line saying what the schedule does (the indicator's tooltip). */
export function describe(s) {
  const v = readSchedule(s);
  if (!v) return `Schedule LoRA Deck cannot show: ${JSON.stringify(s)}`;
  const range = v.unit === "steps"
    ? `steps ${v.start} to ${v.stop ?? "the end"}`
    : `${percent(v.start)} to ${percent(v.stop ?? 1)} of the sampling`;
  const ramp = v.from !== v.to || v.from !== 1
    ? `; strength ${times(v.from)} → ${times(v.to)} (${v.curve}${v.keyframes ? `, ${v.keyframes} keyframes` : ""})`
    : "";
  return `Active ${range}${ramp}`;
}

const EASE = {
  linear: (t) => t,
  ease_in: (t) => t * t,
  ease_out: (t) => 1 - (1 - t) * (1 - t),
  ease_in_out: (t) => (t < 0.5 ? 2 * t * t : 1 - 2 * (1 - t) * (1 - t)),
};

/** The multiplier at t (0..1 across the active range): `hold` keeps each keyframe's value until the next. */
function multiplier(v, t) {
  if (v.curve === "hold") {
    const n = Math.max(2, v.keyframes ?? 5);
    return v.from + (v.to - v.from) * (Math.min(n - 1, Math.floor(t * n)) / (n - 1));
  }
  return v.from + (v.to - v.from) * EASE[v.curve](t);
}

/** A bar of the whole sampling with the active range filled; its top follows the strength multiplier. */
export function scheduleBar(v, { width = 100, height = 10 } = {}) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  svg.setAttribute("class", "ld-sched-bar");
  const track = document.createElementNS(ns, "rect");
  Object.entries({ x: 0, y: 0, width, height, class: "ld-sched-track" }).forEach(([k, x]) => track.setAttribute(k, x));
  svg.append(track);
  const start = Math.min(1, Math.max(0, v.start));
  const stop = Math.min(1, Math.max(start, v.stop ?? 1));
  const top = Math.max(1, Math.abs(v.from), Math.abs(v.to));
  const points = [];
  for (let i = 0; i <= 24; i++) {
    const t = i / 24;
    const y = height * (1 - Math.min(1, Math.abs(multiplier(v, t)) / top));
    points.push(`${(start + (stop - start) * t) * width},${y}`);
  }
  const area = document.createElementNS(ns, "polygon");
  area.setAttribute("points", `${start * width},${height} ${points.join(" ")} ${stop * width},${height}`);
  area.setAttribute("class", "ld-sched-range");
  svg.append(area);
  return svg;
}

/** The row's schedule indicator: a fixed-size button (the row keeps its height) that opens the editor. */
export function scheduleIndicator(row, onApply) {
  const set = hasSchedule(row);
  const v = set ? readSchedule(row.schedule) : null;
  const button = el(set ? "button.ld-sched.ld-set" : "button.ld-icon.ld-sched", {
    title: set ? `${describe(row.schedule)}. Click to edit.` : "Schedule: always on (click to limit it to part of the sampling)",
    "aria-label": "Schedule",
    onclick: () => {
      button.classList.add("ld-open");
      openScheduleEditor({ anchor: button, schedule: row.schedule, onApply, onClose: () => button.classList.remove("ld-open") });
    },
  });
  if (!set) button.append(icon("clock"));
  else if (!v) button.append(el("span.ld-sched-text.ld-sched-unknown", {}, "sched ?"));
  else if (v.unit === "steps") {
    button.append(el("span.ld-sched-text" + (v.from !== v.to ? ".ld-sched-ramp" : ""), {},
      `steps ${v.start}–${v.stop ?? "end"}`));
  } else button.append(scheduleBar(v));
  return button;
}

// --- the editor -----------------------------------------------------------------------------------

const shown = (value) => (value === undefined || value === null ? "" : typeof value === "string" ? value : JSON.stringify(value));

/** A field's text as the user typed it, read as the value it stands for ("" = no key). */
function parse(name, text) {
  const t = text.trim();
  if (t === "") return undefined;
  if (name === "unit" || name === "curve") return t;
  return Number.isFinite(Number(t)) ? Number(t) : t;
}

/**
 * What is wrong with a schedule: [{field, message, kept}]. `kept` marks a value the user did not touch
 * and this UI cannot read: shown as a note and stored as it is, while everything else blocks Apply.
 */
export function problems(s, touched = new Set(FIELDS)) {
  const found = [];
  const say = (field, message, unreadable = false) => found.push({ field, message, kept: unreadable && !touched.has(field) });
  const steps = s.unit === "steps";
  if (s.unit !== undefined && s.unit !== "fraction" && !steps) say("unit", `unit “${shown(s.unit)}” is not fraction or steps`, true);
  const knownUnit = s.unit === undefined || s.unit === "fraction" || steps;
  for (const name of ["start", "stop"]) {
    const x = s[name];
    if (x === undefined || (x === null && name === "stop")) continue; // start 0, stop at the end
    if (!isNumber(x)) say(name, `${name} must be a number, not “${shown(x)}”`, true);
    else if (knownUnit && steps && (!Number.isInteger(x) || x < 0 || x > MAX_STEP)) say(name, `${name} must be a whole step, 0 to ${MAX_STEP}`);
    else if (knownUnit && !steps && (x < 0 || x > 1)) say(name, `${name} must be between 0 and 1 (a fraction of the sampling)`);
  }
  if (isNumber(s.start) && isNumber(s.stop) && knownUnit && s.start >= s.stop) say(touched.has("stop") ? "stop" : "start",
    `start (${s.start}) must come before stop (${s.stop})`);
  for (const name of ["from", "to"]) {
    if (s[name] !== undefined && !isNumber(s[name])) say(name, `${name} must be a number, not “${shown(s[name])}”`, true);
    else if (Math.abs(s[name]) > MAX_MULTIPLIER) say(name, `${name} must lie between -${MAX_MULTIPLIER} and ${MAX_MULTIPLIER}`);
  }
  if (s.curve === "hold" && (s.to ?? s.from ?? 1) !== (s.from ?? 1)) say("to", "“hold” keeps one strength: to must equal from, or pick a curve");
  if (s.curve !== undefined && !CURVES.includes(s.curve)) say("curve", `curve “${shown(s.curve)}” is not one of ${CURVES.join(", ")}`, true);
  const k = s.keyframes;
  if (k !== undefined && !(Number.isInteger(k) && k >= 2 && k <= MAX_KEYFRAMES)) say("keyframes", `keyframes must be a whole number from 2 to ${MAX_KEYFRAMES}, not “${shown(k)}”`, !Number.isInteger(k));
  return found;
}

function field(name, label, control, hint) {
  control.dataset.field = name;
  return el("label.ld-sched-field", { title: hint }, el("span.ld-sched-label", {}, label), control);
}

function choice(name, options, value) {
  const select = el(`select.ld-select.ld-sched-${name}`, {});
  const all = value && !options.some(([v]) => v === value) ? [...options, [value, `${value} (kept)`]] : options;
  select.append(...all.map(([v, text]) => el("option", { value: v, selected: v === value }, text)));
  return select;
}

/** The editor's fields, filled from `original`; `initial` is their text as opened (what counts as unchanged). */
function scheduleForm(original, fresh) {
  const initial = Object.fromEntries(FIELDS.map((f) => [f, shown(original[f])]));
  if (initial.unit === "") initial.unit = "fraction";
  const text = (name, placeholder) => el(`input.ld-num.ld-sched-${name}`, {
    type: "text", inputmode: "decimal", spellcheck: false, value: initial[name], placeholder });
  const inputs = {
    unit: choice("unit", [["fraction", "fraction of the sampling (0–1)"], ["steps", "steps"]], initial.unit),
    start: text("start", "0"),
    stop: text("stop", "end"),
    from: text("from", "1"),
    to: text("to", "1"),
    curve: choice("curve", [["", "—"], ...CURVES.map((c) => [c, c.replace(/_/g, " ")])], initial.curve),
    keyframes: text("keyframes", "auto"),
  };
  if (fresh) {
    inputs.start.value = "0"; // a new schedule starts as the whole sampling
    inputs.stop.value = "1";
  }
  const grid = el("div.ld-sched-grid", {},
    field("unit", "Unit", inputs.unit, "Fractions of the sampling (0 = first step, 1 = last) or sampling steps"),
    field("start", "Start", inputs.start, "Where the LoRA starts acting"),
    field("stop", "Stop", inputs.stop, "Where it stops (empty: to the end)"),
    field("from", "From ×", inputs.from, "Strength multiplier at the start (empty: 1)"),
    field("to", "To ×", inputs.to, "Strength multiplier at the stop (empty: 1)"),
    field("curve", "Curve", inputs.curve, "How the multiplier moves from From to To"),
    field("keyframes", "Keyframes", inputs.keyframes, "How many strength steps the ramp is sampled at (empty: the default)"));
  return { inputs, initial, grid };
}

/** The schedule the form stands for: `original` with each changed field set (or removed when emptied). */
function formDraft({ inputs, initial }, original) {
  const touched = new Set(FIELDS.filter((f) => inputs[f].value !== initial[f]));
  const next = { ...original };
  for (const name of touched) {
    const value = parse(name, inputs[name].value);
    if (name === "unit" && value === "fraction" && original.unit === undefined) delete next.unit;
    else if (value === undefined) delete next[name];
    else next[name] = value;
  }
  return { next, touched };
}

function placeNear(panel, anchor) {
  const rect = anchor.getBoundingClientRect();
  panel.style.left = `${Math.max(4, Math.min(rect.left - 120, window.innerWidth - 330))}px`;
  panel.style.top = `${rect.bottom + 250 < window.innerHeight ? rect.bottom + 2 : Math.max(4, rect.top - 252)}px`;
}

/**
 * @param {object} opts
 * @param {HTMLElement} opts.anchor   the element the editor opens under
 * @param {*} opts.schedule           the row's schedule (undefined/null: none yet)
 * @param {(next: object|undefined) => void} opts.onApply  the new schedule, or undefined to clear it
 * @param {() => void} [opts.onClose]
 */
export function openScheduleEditor({ anchor, schedule, onApply, onClose }) {
  const existing = schedule !== undefined && schedule !== null;
  const readable = isPlain(schedule);
  const original = readable ? schedule : {};
  const form = scheduleForm(original, !readable);
  const preview = el("div.ld-sched-preview");
  const message = el("div.ld-sched-msg", { role: "status" });
  const done = (next) => {
    close();
    onApply(next);
  };
  const apply = el("button.ld-btn.ld-sched-apply", { onclick: () => commit() }, "Apply");
  const clear = existing ? el("button.ld-btn.ld-sched-clear", { title: "Always on again (removes the schedule)",
    onclick: () => done(undefined) }, "Clear") : null;
  const extra = Object.keys(original).filter((k) => !FIELDS.includes(k));
  const panel = el("div.ld-sched-editor.ld-floating", { role: "dialog", "aria-label": "Schedule" },
    el("div.ld-sched-title", {}, "Schedule"),
    existing && !readable ? el("div.ld-sched-note", {}, `This schedule is not an object LoRA Deck can read: `
      + `${JSON.stringify(schedule)}. Apply replaces it; Clear removes it.`) : null,
    form.grid, preview,
    extra.length ? el("div.ld-muted.ld-sched-extra", {}, `Also kept as stored: ${extra.join(", ")}`) : null,
    message,
    el("div.ld-sched-buttons", {}, apply, clear, el("button.ld-btn.ld-sched-cancel", { onclick: () => close() }, "Cancel")));
  const { close } = floating(panel, { onClose });
  placeNear(panel, anchor);

  function check() {
    const { next, touched } = formDraft(form, original);
    const found = problems(next, touched);
    const blocking = found.filter((p) => !p.kept);
    for (const [name, input] of Object.entries(form.inputs)) {
      input.classList.toggle("ld-invalid", blocking.some((p) => p.field === name));
      input.classList.toggle("ld-kept", found.some((p) => p.kept && p.field === name));
    }
    message.replaceChildren(...found.map((p) => el(p.kept ? "div.ld-sched-kept" : "div.ld-sched-error", {},
      p.kept ? `${p.message} (kept as stored)` : p.message)));
    apply.disabled = blocking.length > 0;
    const v = readSchedule(next);
    preview.replaceChildren(v && !blocking.length ? scheduleBar(v, { width: 300, height: 24 }) : "",
      el("span.ld-muted", {}, blocking.length ? "" : describe(next)));
    return { next, ok: blocking.length === 0, unchanged: readable && touched.size === 0 };
  }

  function commit() {
    const { next, ok, unchanged } = check();
    if (!ok) return;
    if (unchanged) close(); // nothing changed: no undo step
    else done(next);
  }

  for (const input of Object.values(form.inputs)) {
    input.addEventListener("input", check);
    input.addEventListener("change", check);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        commit();
      }
    });
  }
  check();
  form.inputs.start.focus();
  form.inputs.start.select();
  return { close, panel };
}
