"""``python -m vae_search COMMAND`` is ``vae-search COMMAND``."""

from vae_search.cli import console

console()
