"""The host's loras folders, and names from workflows resolved strictly inside them."""

from __future__ import annotations

import functools
import os

import folder_paths

from ..loader import files, hashes, names


def lora_names() -> list[str]:
    return folder_paths.get_filename_list("loras")


def lora_roots() -> list[str]:
    return folder_paths.get_folder_paths("loras")


def resolve(name: str) -> str:
    """Full path of a LoRA named by a workflow; LoraNameError (with close matches) when it is not here."""
    return names.resolve(name, lora_roots(), lora_names())


def resolve_checked(name: str) -> str:
    """resolve(), plus the file's header validated (no tensor data read): a broken file stops the workflow
    before it runs, shown on the node without a traceback. Pickles are only ever opened when the node runs."""
    path = resolve(name)
    if not path.lower().endswith(files.PICKLE_SUFFIXES):
        _check_header(path, files.file_identity(path))
    return path


@functools.lru_cache(maxsize=4096)
def _check_header(path: str, identity: files.versions.FileVersion) -> None:
    # Validation runs on the server's event loop for every queued prompt: a file that passed is not re-read
    # until it changes on disk. Refusals raise, so they are never cached.
    files.read_header(path)


def file_versions(wanted) -> str:
    """The version on disk of each named LoRA (loader/versions.py), as a node's input fingerprint: the host
    runs a node again when a file it names was replaced, even with the same size and mtime."""
    parts = []
    for name in wanted:
        try:
            version = files.file_identity(resolve(name))
            parts.append(f"{name} {version.fingerprint} {version.stat_part}")
        except (names.LoraNameError, files.LoraFileError) as e:
            parts.append(f"{name} {e}")
    return "\n".join(parts)


def validation_error(name: str) -> bool | str:
    """True when the name resolves to a readable file, else the message the host shows before the workflow runs."""
    try:
        resolve_checked(name)
    except (names.LoraNameError, files.LoraFileError) as e:
        return str(e)
    return True


def alias_of(name: str) -> str | None:
    """The alias A1111 lists a LoRA under: `ss_output_name` from its safetensors metadata (None if none)."""
    if not name.lower().endswith(".safetensors"):
        return None  # pickles are never opened to read a name
    try:
        path = resolve(name)
        return _alias(path, files.file_identity(path))
    except (names.LoraNameError, files.LoraFileError, OSError):
        return None


@functools.lru_cache(maxsize=16384)
def _alias(path: str, identity: files.versions.FileVersion) -> str | None:
    alias = files.read_header(path).metadata.get("ss_output_name")
    return (alias.strip() or None) if isinstance(alias, str) else None


def resolve_tag_name(name: str) -> str:
    """The relative name of the file a prompt tag names (path, stem or alias); LoraNameError otherwise."""
    return names.resolve_tag_name(name, lora_names(), alias_of)


@functools.cache
def hash_cache() -> hashes.HashCache:
    """The pack's one SHA-256 cache (nodes and routes), kept in `<user>/loradeck/hash-cache.json`."""
    return hashes.HashCache(os.path.join(folder_paths.get_user_directory(), "loradeck", "hash-cache.json"))
