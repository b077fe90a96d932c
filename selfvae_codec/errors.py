"""The one exception family of the package (no torch here).

Every error a user can cause (a bad image, a corrupt file, a missing model, a wrong
option) is a CodecError with a one-line message, so `except CodecError` catches them
all and the command line prints them as `error: ...`.
"""


class CodecError(Exception):
    """Anything that stops an image from being coded or decoded (one-line message)."""


class BadValueError(CodecError, ValueError):
    """An argument out of its range or of the wrong kind (a quality, a step, a device
    name, an output format): the caller's mistake, exit status 2 on the command line."""


class OutputExistsError(CodecError):
    """The output file exists and overwriting was not asked for."""


def count_of(number: int, noun: str) -> str:
    """'1 tile', '3 tiles': a count for a one-line message (nouns with a plain -s)."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
