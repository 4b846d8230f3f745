"""Print the dev extras of pyproject.toml, one requirement a line (the Makefile installs them)."""

from pathlib import Path

import tomllib

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
print("\n".join(project["optional-dependencies"]["dev"]))
