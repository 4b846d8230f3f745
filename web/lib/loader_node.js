// Extras on the single-LoRA LoraDeckLoader node: an info button and a block editor for block_weights.
import { app, setWidgetValue } from "./comfy.js";
import { el, floating } from "./dom.js";
import { blockEditor } from "./editor.js";
import { openInfo } from "./info.js";
import { loraEnergy } from "./server.js";

function button(node, label, action) {
  const widget = node.addWidget("button", label, null, action);
  widget.serialize = false; // buttons hold no value: keep widgets_values and the API prompt as the node defines them
  widget.options = { ...(widget.options ?? {}), serialize: false };
  return widget;
}

export function loaderTools(node) {
  const find = (name) => node.widgets?.find((w) => w.name === name);
  button(node, "LoRA info", () => {
    const name = find("lora_name")?.value;
    if (name) openInfo(name);
  });
  button(node, "Edit block weights", async () => {
    const target = find("block_weights");
    if (!target) return;
    const name = find("lora_name")?.value;
    const energy = name ? await loraEnergy(name).catch(() => null) : null;
    const panel = el("div.ld-floating.ld-editor-popup", {}, el("div.ld-info-head", {}, "Block weights",
      el("button.ld-btn.ld-close", { onclick: () => close() }, "✕")));
    const { close } = floating(panel);
    panel.append(blockEditor({
      spec: target.value ?? "",
      lora: name || null,
      energy: energy ? new Map(Object.entries(energy.shares)) : null,
      onChange: (spec) => setWidgetValue(node, target, spec),
    }));
    const rect = app.canvas?.canvas?.getBoundingClientRect?.() ?? { left: 40, top: 40 };
    panel.style.left = `${rect.left + 60}px`;
    panel.style.top = `${rect.top + 60}px`;
  });
}
