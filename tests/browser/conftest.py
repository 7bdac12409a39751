"""The browser tests reuse the integration helpers (support, cp_support, rollout_support)
without editing them."""

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
