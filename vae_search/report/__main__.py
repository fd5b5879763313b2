"""``python -m vae_search.report`` is ``vae-search report``."""

import sys

from vae_search.report.command import main

sys.exit(main())
