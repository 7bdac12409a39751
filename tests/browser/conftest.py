"""The browser test reuses the integration helpers (support, cp_support) without editing them."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
