"""The one exception type users see: its message is a single line naming the problem and the fix."""


class GlassError(Exception):
    """A user-facing error; the CLI prints ``error: <message>`` and exits with status 2."""
