"""The one exception family of the package (no torch here).

Every error a user can cause (a bad image, a corrupt file, a missing model, a wrong
option) is a CodecError with a one-line message, so `except CodecError` catches them
all and the command line prints them as `error: ...`.
"""


class CodecError(Exception):
    """Anything that stops an image from being coded or decoded (one-line message)."""
