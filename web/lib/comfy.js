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

export function toast(severity, summary, detail) {
  const toasts = app.extensionManager?.toast;
  if (toasts?.add) toasts.add({ severity, summary, detail, life: 4000 });
  else console.log(`[LoRA Deck] ${summary}: ${detail ?? ""}`);
}
