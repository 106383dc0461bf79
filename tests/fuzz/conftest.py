"""Fuzz targets (hypothesis): short in ``make test``, long behind ``make fuzz``.

``RIGFAST_FUZZ_EXAMPLES`` sets the examples per target (default 40: seconds in all);
``make fuzz`` runs thousands. Hypothesis keeps failing inputs in ``.hypothesis/`` and
replays them first; a failure found is then written down as a regression test
(``tests/fuzz/test_regressions.py``).
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

EXAMPLES = int(os.environ.get("RIGFAST_FUZZ_EXAMPLES", "40"))

settings.register_profile(
    "rigfast-fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    print_blob=True,
)
FUZZ = settings.get_profile("rigfast-fuzz")
