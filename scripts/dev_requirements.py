"""Print the dev extras of pyproject.toml, one requirement a line (the Makefile installs them)."""

import tomllib
from pathlib import Path

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
print("\n".join(project["optional-dependencies"]["dev"]))
