"""`python -m selfvae_codec` runs the command line."""

from .cli.main import main

main()
