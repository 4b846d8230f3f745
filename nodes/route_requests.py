"""What a route request may carry, and how a refused one answers (nodes/routes.py)."""

from __future__ import annotations

import os

from aiohttp import web

from ..loader import spec_view
from ..loader.spec import MAX_SPEC_CHARS


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def vanished_is_404(function, path: str):
    """function(path), with a file that is gone (deleted or moved since it was listed) refused as 404."""
    try:
        return function(path)
    except (OSError, ValueError):  # LoraFileError too: its reader says "does not exist"
        if os.path.exists(path):
            raise
        raise Refused(404, f"{os.path.basename(path)!r} is no longer in your loras folders (moved or deleted "
                            "since it was listed)") from None


async def json_object(request: web.Request,
                       shape: str = '{"spec": text, "layout": name, "lora": name}') -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        raise Refused(400, f"send a JSON object: {shape}")
    return body


def spec_request(body: dict) -> tuple[str, str | None, str | None]:
    text, layout, lora = body.get("spec", ""), body.get("layout"), body.get("lora")
    if text is None:
        text = ""
    if not isinstance(text, str):
        raise Refused(400, f'"spec" is the block-weight text, got {type(text).__name__}')
    if len(text) > 2 * MAX_SPEC_CHARS:
        raise Refused(400, f"the spec has {len(text)} characters; the limit is {MAX_SPEC_CHARS}")
    choices = [*spec_view.LAYOUTS, spec_view.LORA_LAYOUT]
    if layout is not None and layout not in choices:
        raise Refused(400, f'"layout" is one of {", ".join(choices)}, got {str(layout)[:40]!r}')
    if lora is not None and not isinstance(lora, str):
        raise Refused(400, f'"lora" is a LoRA name, got {type(lora).__name__}')
    return text, layout, lora or None


def error_response(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)
