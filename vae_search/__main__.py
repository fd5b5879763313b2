"""``python -m vae_search COMMAND`` is ``vae-search COMMAND``."""

import sys

from vae_search.cli import main

sys.exit(main())
