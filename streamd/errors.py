"""Error types users see. Each carries a message meant to be printed as is, without a traceback."""


class StreamdError(Exception):
    """Base class of errors that the CLI reports as a one-line message and a non-zero exit."""


class AudioDecodeError(StreamdError):
    """A file or URL could not be opened or decoded as audio."""
