"""A LoRA's preview image, from the sidecar files other tools leave beside it; nothing is fetched.

Looked for in the LoRA's own folder, in this order: `<name>.preview.<ext>` (A1111 and Civitai Helper),
`<name>.<ext>` (A1111 also reads these), then the local file LoRA Manager's `<name>.metadata.json` names in
`preview_url` when it lies in that same folder. Extensions: png, jpg, jpeg, webp, gif. Only regular files
of at most MAX_PREVIEW_BYTES are served; a sidecar's path never leads out of the LoRA's folder.
"""

from __future__ import annotations

import os
import stat

from . import trigger_words

MAX_PREVIEW_BYTES = 32 * 1024 * 1024
CONTENT_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".webp": "image/webp",
                 ".gif": "image/gif"}


def preview_of(lora_path: str) -> str | None:
    """The path of the LoRA's preview image, or None."""
    stem = os.path.splitext(lora_path)[0]
    candidates = [stem + ".preview" + ext for ext in CONTENT_TYPES] + [stem + ext for ext in CONTENT_TYPES]
    named = _lora_manager_preview(stem + ".metadata.json")
    if named:
        candidates.append(named)
    folder = os.path.dirname(os.path.abspath(lora_path))
    for candidate in candidates:
        if _usable(candidate, folder):
            return candidate
    return None


def content_type(path: str) -> str:
    return CONTENT_TYPES[os.path.splitext(path)[1].lower()]


def _lora_manager_preview(sidecar: str) -> str | None:
    if not os.path.isfile(sidecar):
        return None
    try:
        data = trigger_words.read_json(sidecar)
    except (OSError, ValueError):
        return None
    named = data.get("preview_url") if isinstance(data, dict) else None
    if not isinstance(named, str) or not named or "://" in named:
        return None  # remote previews are never fetched
    return os.path.join(os.path.dirname(sidecar), os.path.basename(named.replace("\\", "/")))


def _usable(path: str, folder: str) -> bool:
    if os.path.splitext(path)[1].lower() not in CONTENT_TYPES:
        return False
    if os.path.dirname(os.path.abspath(path)) != folder:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and 0 < st.st_size <= MAX_PREVIEW_BYTES
