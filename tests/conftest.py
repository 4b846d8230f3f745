import os
import sys
from pathlib import Path

from hypothesis import HealthCheck, settings

# `import loader` in unit tests: the host-independent core, imported without the host.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# skip_guard: a skip not listed in tests/allowed_skips.txt fails the run; pytester: for testing that plugin.
pytest_plugins = ["skip_guard", "pytester"]

# Fuzzing: `ci` (the default) is fast and reproducible; LORADECK_FUZZ=long (`make fuzz`) explores far more.
_FUZZ_COMMON = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large]}
settings.register_profile("ci", max_examples=1000, derandomize=True, print_blob=True, **_FUZZ_COMMON)
settings.register_profile("long", max_examples=50_000, **_FUZZ_COMMON)
settings.load_profile(os.environ.get("LORADECK_FUZZ", "ci"))
