"""``python -m vae_search`` is ``python -m vae_search.run``."""

import sys

from vae_search.run import main

sys.exit(main())
