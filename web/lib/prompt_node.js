// Editor help in LoraDeckPrompt's text box: typing `<lora:` opens the LoRA picker and the choice becomes a
// `<lora:NAME:1>` tag at the caret; the box's title lists each tag with the file it resolves to and its
// strengths, as the server reads them (POST /loradeck/prompt_tags, the node's own parser and names).
// The text box is found from the event's target, so this works whether the frontend draws the node on the
// canvas with a DOM textarea (the widget's element) or as a Vue node (a textarea inside [data-node-id]).
import { app, setWidgetValue } from "./comfy.js";
import { openPicker } from "./picker.js";
import { readPromptTags } from "./server.js";

const NODE_TYPE = "LoraDeckPrompt";
const OPENING = "<lora:";
const byElement = new WeakMap(); // the widget's own textarea -> its node

/** The LoRA's name as a tag writes it: its path inside the loras folders, without `.safetensors`. */
export const tagName = (name) => name.replace(/\.safetensors$/i, "");

function promptOf(target) {
  if (!(target instanceof HTMLTextAreaElement)) return null;
  let node = byElement.get(target);
  if (!node) {
    const id = target.closest("[data-node-id]")?.dataset.nodeId;
    const graph = app.canvas?.graph ?? app.graph;
    node = id === undefined ? null : graph?.getNodeById(Number(id)) ?? graph?.getNodeById(id);
  }
  if (node?.comfyClass !== NODE_TYPE && node?.type !== NODE_TYPE) return null;
  const widget = node.widgets?.find((w) => w.name === "text");
  return widget ? { node, widget } : null;
}

function describe(reading) {
  if (reading.error) return `LoRA tags: ${reading.error}`;
  if (!reading.tags.length) return "No LoRA tags. Type <lora: to pick one.";
  return reading.tags.map((t) => {
    const strengths = `model ${t.model}, clip ${t.clip}${t.blocks ? `, blocks ${t.blocks}` : ""}`;
    return t.file ? `${t.tag} → ${t.file} (${strengths})` : `${t.tag}: ${t.error}`;
  }).join("\n");
}

const readings = new Map(); // text -> Promise of its description (the last few texts)

async function showTags(textarea, text) {
  if (!readings.has(text)) {
    readings.set(text, readPromptTags(text).then(describe).catch((e) => `LoRA tags: ${e.message}`));
    while (readings.size > 32) readings.delete(readings.keys().next().value);
  }
  const line = await readings.get(text);
  if (textarea.value === text) {
    textarea.title = line;
    textarea.dataset.loradeckTags = line;
  }
}

function insertTag(textarea, node, widget, caret) {
  openPicker({
    anchor: textarea,
    note: "Pick a LoRA for the tag",
    onPick: (name) => {
      const text = textarea.value;
      const start = caret - OPENING.length;
      if (text.slice(start, caret) !== OPENING) return; // the text changed meanwhile: leave it be
      const tag = `<lora:${tagName(name)}:1>`;
      const value = text.slice(0, start) + tag + text.slice(caret);
      setWidgetValue(node, widget, value);
      if (textarea.value !== value) textarea.value = value; // a Vue node's box follows the widget a frame later
      textarea.focus();
      textarea.setSelectionRange(start + tag.length, start + tag.length);
      forgetReadings();
      showTags(textarea, value);
    },
  });
}

function forgetReadings() {
  readings.clear(); // a file added or renamed changes what a name resolves to
}

function onInput(event) {
  const found = promptOf(event.target);
  if (!found) return;
  const textarea = event.target;
  const caret = textarea.selectionStart;
  if (event.inputType?.startsWith("insert") && caret === textarea.selectionEnd
      && textarea.value.slice(Math.max(0, caret - OPENING.length), caret) === OPENING) {
    insertTag(textarea, found.node, found.widget, caret);
  }
  clearTimeout(textarea.__loradeckTimer);
  textarea.__loradeckTimer = setTimeout(() => showTags(textarea, textarea.value), 300);
}

function onHover(event) {
  const found = promptOf(event.target);
  if (found) showTags(event.target, event.target.value);
}

let listening = false;

/** Called for every LoraDeckPrompt node the frontend creates. */
export function promptTools(node) {
  const widget = node.widgets?.find((w) => w.name === "text");
  const element = widget?.element ?? widget?.inputEl;
  if (element instanceof HTMLTextAreaElement) byElement.set(element, node);
  if (!listening) {
    listening = true;
    document.addEventListener("input", onInput, true);
    document.addEventListener("pointerover", onHover, true);
    document.addEventListener("focusin", onHover, true);
  }
}
