"""The pack's routes on a real aiohttp application over one test folder (no ComfyUI server needed)."""

from __future__ import annotations

import os

import hosting
from aiohttp import web


class Folders:
    """The LoraFolders interface (nodes/routes.py) over one test folder, listing LoRA files as the host does;
    `store` is the hash cache's file, and the pinned trigger words live beside it."""

    def __init__(self, root, store):
        self.root, self.store = str(root), str(store)

    def roots(self):
        return [self.root]

    def names(self):
        found = []
        for folder, _, files in os.walk(self.root, followlinks=True):
            found += [os.path.relpath(os.path.join(folder, name), self.root).replace(os.sep, "/")
                      for name in files if name.endswith((".safetensors", ".ckpt", ".pt"))]
        return sorted(found)

    def hash_cache(self):
        return hosting.boot().loader.hashes.HashCache(self.store)

    def trigger_store(self):
        return os.path.join(os.path.dirname(self.store), "trigger_words.json")

    def alias_of(self, name):  # what nodes/folders.alias_of reads: ss_output_name from the file's header
        header = hosting.boot().loader.files.read_header(os.path.join(self.root, name))
        return header.metadata.get("ss_output_name")


def application(routes) -> web.Application:
    """An aiohttp application serving `routes` (a LoraRoutes)."""
    table = web.RouteTableDef()
    routes.add_to(table)
    app = web.Application()
    app.add_routes(table)
    return app
