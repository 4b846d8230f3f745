// LoRA Deck's frontend extension: the rows widget of LoraDeckStack, the LoRA info panel, the block editor
// and the prompt node's tag help, on the frontend's public extension API (registerExtension, getCustomWidgets,
// DOM widgets).
import { api, app } from "./lib/comfy.js";
import { loaderTools } from "./lib/loader_node.js";
import { promptTools } from "./lib/prompt_node.js";
import { ROWS_TYPE, rowsWidget } from "./lib/rows.js";

// The node that ran, by its execution id ("12", or "12:5" inside subgraph node 12).
function nodeByExecutionId(id) {
  let graph = app.graph;
  let node = null;
  for (const part of String(id).split(":")) {
    node = graph?.getNodeById(Number(part)) ?? graph?.getNodeById(part);
    graph = node?.subgraph;
  }
  return node;
}

// After LoraDeckApply runs, mark the rows of the LoraDeckStack nodes that feed it (a chain of stacks).
function showRun(executionId, entries) {
  let node = nodeByExecutionId(executionId);
  const seen = new Set();
  while (node && !seen.has(node)) {
    seen.add(node);
    const slot = node.inputs?.findIndex((i) => i.name === "lora_stack") ?? -1;
    node = slot >= 0 ? node.getInputNode(slot) : null;
    node?.widgets?.find((w) => w.type === ROWS_TYPE)?.showRun?.(entries);
  }
}

// The host may serve this folder under two names (pyproject's [tool.comfy] web and WEB_DIRECTORY):
// register once whichever copy loads first.
if (!window.__loradeckRegistered) {
  window.__loradeckRegistered = true;
  const css = document.createElement("link");
  css.rel = "stylesheet";
  css.href = new URL("./loradeck.css", import.meta.url).href;
  document.head.append(css);

  app.registerExtension({
    name: "LoraDeck.Nodes",
    getCustomWidgets() {
      return {
        [ROWS_TYPE]: (node, inputName) => ({ widget: rowsWidget(node, inputName), minWidth: 440, minHeight: 90 }),
      };
    },
    setup() {
      api.addEventListener("executed", ({ detail }) => {
        if (detail?.output?.loradeck) showRun(detail.node, detail.output.loradeck);
      });
    },
    nodeCreated(node) {
      if (node.comfyClass === "LoraDeckLoader") loaderTools(node);
      if (node.comfyClass === "LoraDeckPrompt") promptTools(node);
    },
  });
}
