"""Trigger words of a LoRA, offline: pinned by the user, from sidecar files, from the file's metadata.

Sources, in the order their words are listed:
1. words the user pinned for the LoRA (`<user>/loradeck/trigger_words.json`, `{"relative/name": [words]}`,
   written atomically by `pin`);
2. sidecars next to the file: Civitai Helper's `<stem>.civitai.info` (the Civitai model-version JSON; its
   `trainedWords` list, which Civitai Helper joins with ", ") and LoRA Manager's `<stem>.metadata.json`
   (top-level `trainedWords`, and `civitai.trainedWords`);
3. the file's own metadata: `modelspec.trigger_phrase` (comma-separated);
4. only when none of 2–3 gives a word: kohya's `ss_tag_frequency` (`{folder: {tag: count}}`), the tags that
   are in every caption of a dataset folder (count = the folder's `img_count` from `ss_dataset_dirs`, or
   the folder's highest count when that is missing), at most MAX_CAPTION_WORDS, most frequent first.

A word is listed once (case-insensitively). Sidecars are read as JSON only, at most MAX_SIDECAR_BYTES; a
broken sidecar is skipped and named in `notes`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

from . import atomic

MAX_SIDECAR_BYTES = 8 * 1024 * 1024
MAX_CAPTION_WORDS = 5
MAX_WORD_CHARS = 200
SIDECARS = (".civitai.info", ".metadata.json")
PINNED_FILE = "trigger_words.json"


@dataclass
class TriggerWords:
    words: list[str] = field(default_factory=list)
    sources: dict[str, list[str]] = field(default_factory=dict)  # source -> its words
    notes: list[str] = field(default_factory=list)


def for_lora(path: str, name: str, metadata: dict[str, str], pinned: dict[str, list[str]] | None = None
             ) -> TriggerWords:
    """The trigger words of the LoRA at `path` (relative name `name`, safetensors `metadata`)."""
    found = TriggerWords()
    _add(found, "pinned", (pinned or {}).get(name, []))
    for suffix in SIDECARS:
        sidecar = os.path.splitext(path)[0] + suffix
        if os.path.isfile(sidecar):
            try:
                _add(found, suffix[1:], sidecar_words(sidecar))
            except ValueError as e:
                found.notes.append(f"{os.path.basename(sidecar)} ignored: {e}")
    _add(found, "modelspec.trigger_phrase", _split(metadata.get("modelspec.trigger_phrase")))
    if set(found.sources) <= {"pinned"}:
        _add(found, "ss_tag_frequency", caption_words(metadata))
    return found


def sidecar_words(path: str) -> list[str]:
    """`trainedWords` of a Civitai Helper or LoRA Manager sidecar; ValueError when it is not such JSON."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    lists = [data.get("trainedWords")]
    if isinstance(data.get("civitai"), dict):
        lists.append(data["civitai"].get("trainedWords"))
    words: list[str] = []
    for value in lists:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            words += [w for w in value if isinstance(w, str)]
    return words


def caption_words(metadata: dict[str, str]) -> list[str]:
    """Tags in every caption of a kohya dataset folder (ss_tag_frequency, ss_dataset_dirs)."""
    folders = _loads(metadata.get("ss_tag_frequency"))
    dirs = _loads(metadata.get("ss_dataset_dirs"))
    if not isinstance(folders, dict):
        return []
    counted: dict[str, int] = {}
    for folder, tags in folders.items():
        if not isinstance(tags, dict):
            continue
        counts = {str(t).strip(): c for t, c in tags.items() if isinstance(c, int) and not isinstance(c, bool)}
        if not counts:
            continue
        info = dirs.get(folder) if isinstance(dirs, dict) else None
        images = info.get("img_count") if isinstance(info, dict) else None
        everywhere = images if isinstance(images, int) and images > 0 else max(counts.values())
        for tag, count in counts.items():
            if tag and count >= everywhere:
                counted[tag] = counted.get(tag, 0) + count
    ranked = sorted(counted, key=lambda t: -counted[t])  # stable: equal counts keep the file's order
    return ranked[:MAX_CAPTION_WORDS]


def joined(lists: list[list[str]]) -> str:
    """The words of several LoRAs as one prompt fragment, each word once, in order."""
    seen: set[str] = set()
    out = []
    for words in lists:
        for word in words:
            if word.lower() not in seen:
                seen.add(word.lower())
                out.append(word)
    return ", ".join(out)


# --- pinned words -------------------------------------------------------------------------------------------

def load_pinned(store: str) -> dict[str, list[str]]:
    """The user's pinned words ({} when there is no file or it cannot be read as such)."""
    if not os.path.isfile(store):
        return {}
    try:
        data = read_json(store)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): [w for w in v if isinstance(w, str)] for k, v in data.items() if isinstance(v, list)}


def pin(store: str, name: str, words: list[str]) -> dict[str, list[str]]:
    """Set (or with no words, remove) the pinned words of `name`; the store is rewritten atomically."""
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise ValueError("pinned words should be a list of strings")
    cleaned = [w.strip()[:MAX_WORD_CHARS] for w in words if w.strip()]
    if os.path.isfile(store) and not isinstance(read_json(store), dict):
        raise ValueError(f"{os.path.basename(store)} is not a JSON object; not overwritten")
    pinned = load_pinned(store)
    if cleaned:
        pinned[name] = cleaned
    else:
        pinned.pop(name, None)
    os.makedirs(os.path.dirname(store) or ".", exist_ok=True)
    # Our own store under user/loradeck: replacing it is what pinning asks for.
    atomic.write_text(store, json.dumps(pinned, ensure_ascii=False, indent=1, sort_keys=True), replace=True)
    return pinned


# --- helpers ------------------------------------------------------------------------------------------------

def _add(found: TriggerWords, source: str, words: list[str]) -> None:
    have = {w.lower() for w in found.words}
    kept = []
    for word in words:
        word = " ".join(word.split())[:MAX_WORD_CHARS].strip(" ,")
        if word and word.lower() not in have:
            have.add(word.lower())
            kept.append(word)
    if kept:
        found.sources[source] = kept
        found.words += kept


def _split(text: object) -> list[str]:
    return [w for w in str(text).split(",") if w.strip()] if isinstance(text, str) else []


def _loads(raw: object):
    if not isinstance(raw, str) or not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def read_json(path: str):
    size = os.path.getsize(path)
    if size > MAX_SIDECAR_BYTES:
        raise ValueError(f"{size} bytes; the limit is {MAX_SIDECAR_BYTES}")
    with open(path, "rb") as f:
        raw = f.read(MAX_SIDECAR_BYTES + 1)
    try:
        return json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise ValueError(f"not JSON ({str(e)[:80]})") from None
