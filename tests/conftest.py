import sys
from pathlib import Path

# `import loader` in unit tests: the host-independent core, imported without the host.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
