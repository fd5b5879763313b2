"""``python -m vae_search.bench`` is ``vae-search bench``."""

import sys

from vae_search.bench.command import main

sys.exit(main())
