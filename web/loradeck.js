// LoRA Deck's frontend extension: the rows widget of LoraDeckStack, the LoRA info panel and the block
// editor, on the frontend's public extension API (registerExtension, getCustomWidgets, DOM widgets).
import { app } from "./lib/comfy.js";
import { loaderTools } from "./lib/loader_node.js";
import { ROWS_TYPE, rowsWidget } from "./lib/rows.js";

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
    nodeCreated(node) {
      if (node.comfyClass === "LoraDeckLoader") loaderTools(node);
    },
  });
}
