// The LoRA picker: the loras folders as a tree, and type-to-search across all of them
// (every word must appear in the path, in any order). Arrow keys move, Enter picks, Escape closes.
import { toast } from "./comfy.js";
import { el, floating, formatBytes } from "./dom.js";
import { listLoras, previewURL } from "./server.js";

/**
 * @param {object} opts
 * @param {HTMLElement} opts.anchor   the element the picker opens under
 * @param {string?} opts.current      the row's current LoRA (its folder opens, it is highlighted)
 * @param {string[]?} opts.only       offer only these names (re-link candidates)
 * @param {string?} opts.note         a line shown above the list
 * @param {(name: string) => void} opts.onPick
 */
export async function openPicker({ anchor, current, only, note, onPick }) {
  let loras;
  try {
    loras = await listLoras(true);
  } catch (e) {
    toast("error", "LoRA Deck", `Cannot list your LoRAs: ${e.message}`);
    return { close: () => {} };
  }
  if (only) loras = loras.filter((l) => only.includes(l.name));
  const search = el("input.ld-search", { type: "search", placeholder: `Search ${loras.length} LoRAs…`, spellcheck: false });
  const list = el("div.ld-tree", { role: "listbox" });
  // The preview image of the highlighted or hovered LoRA, when a sidecar beside it has one.
  const thumb = el("img.ld-picker-thumb", { alt: "", hidden: true });
  const panel = el("div.ld-picker.ld-floating", {}, note ? el("div.ld-picker-note", {}, note) : null, search, list,
    thumb);
  const rect = anchor.getBoundingClientRect();
  panel.style.left = `${Math.max(4, Math.min(rect.left, window.innerWidth - 380))}px`;
  panel.style.top = `${Math.min(rect.bottom + 2, window.innerHeight - 420)}px`;
  const { close } = floating(panel);
  let active = -1;

  const pick = (name) => {
    close();
    onPick(name);
  };

  function showPreview(lora) {
    thumb.hidden = !lora?.preview;
    if (lora?.preview) {
      const src = previewURL(lora.name);
      if (thumb.getAttribute("src") !== src) thumb.src = src;
      thumb.alt = `Preview of ${lora.name}`;
    }
  }

  const byName = new Map(loras.map((l) => [l.name, l]));

  function item(lora, label) {
    return el("div.ld-item", {
      role: "option", dataset: lora.preview ? { name: lora.name, preview: "true" } : { name: lora.name },
      title: `${lora.name} (${formatBytes(lora.size)})`,
      onclick: () => pick(lora.name), onmouseenter: () => showPreview(lora),
      "aria-selected": lora.name === current ? "true" : null,
    }, el("span.ld-item-name", {}, label), el("span.ld-item-size", {}, formatBytes(lora.size)));
  }

  function tree() {
    const root = { folders: new Map(), files: [] };
    for (const lora of loras) {
      const parts = lora.name.split("/");
      let node = root;
      for (const folder of parts.slice(0, -1)) {
        if (!node.folders.has(folder)) node.folders.set(folder, { folders: new Map(), files: [] });
        node = node.folders.get(folder);
      }
      node.files.push(lora);
    }
    const render = (node, path) => [
      ...[...node.folders].sort(([a], [b]) => a.localeCompare(b)).map(([name, child]) => {
        const full = path ? `${path}/${name}` : name;
        const details = el("details.ld-folder", { open: !!current?.startsWith(full + "/") || !!only },
          el("summary", { dataset: { folder: full } }, name), el("div.ld-folder-items", {}, render(child, full)));
        return details;
      }),
      ...node.files.map((lora) => item(lora, lora.name.split("/").pop())),
    ];
    return render(root, "");
  }

  function results(words) {
    return loras
      .filter((l) => words.every((w) => l.name.toLowerCase().includes(w)))
      .map((lora) => item(lora, lora.name));
  }

  function refresh() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const content = words.length ? results(words) : tree();
    list.replaceChildren(...(content.length ? content : [el("div.ld-empty", {}, "No LoRA matches")]));
    active = words.length && content.length ? 0 : -1;
    highlight();
  }

  const visibleItems = () => [...list.querySelectorAll(".ld-item")].filter((n) => n.offsetParent !== null);

  function highlight() {
    visibleItems().forEach((n, i) => n.classList.toggle("ld-active", i === active));
    visibleItems()[active]?.scrollIntoView({ block: "nearest" });
    showPreview(byName.get(visibleItems()[active]?.dataset.name));
  }

  search.addEventListener("input", refresh);
  search.addEventListener("keydown", (e) => {
    const items = visibleItems();
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      e.preventDefault();
      active = Math.max(0, Math.min(items.length - 1, active + (e.key === "ArrowDown" ? 1 : -1)));
      highlight();
    } else if (e.key === "Enter" && items[active]) {
      e.preventDefault();
      pick(items[active].dataset.name);
    }
  });
  refresh();
  list.querySelector('[aria-selected="true"]')?.scrollIntoView({ block: "center" });
  search.focus();
  return { close };
}
