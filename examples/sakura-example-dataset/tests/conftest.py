"""Let the tests import the package from its source tree when it is not pip-installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
