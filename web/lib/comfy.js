// The one place that reaches into the frontend: its public `comfyAPI` globals and the change tracker.
// Everything else in LoRA Deck's web code imports from here, so a frontend change is fixed in one file.

export const app = window.comfyAPI.app.app;
export const api = window.comfyAPI.api.api;

// Widget edits made in our DOM do not always end in the mouseup/keyup the change tracker listens to
// (a picker choice, a fetched hash): ask it to compare the graph now so undo/redo sees every edit.
export function graphChanged(node) {
  node?.setDirtyCanvas?.(true, true);
  app.extensionManager?.workflow?.activeWorkflow?.changeTracker?.checkState?.();
}

// Set a widget's value the way the frontend's own widgets do: the value, then the widget's callback. Nodes 2.0
// (frontends 1.3x) redraws a widget only through its callback, and newer frontends hook it too; a bare
// assignment would change the saved value while the node still showed the old one.
export function setWidgetValue(node, widget, value) {
  widget.value = value;
  widget.callback?.(value, app.canvas, node);
  graphChanged(node);
}

export function toast(severity, summary, detail) {
  const toasts = app.extensionManager?.toast;
  if (toasts?.add) toasts.add({ severity, summary, detail, life: 4000 });
  else console.log(`[LoRA Deck] ${summary}: ${detail ?? ""}`);
}
