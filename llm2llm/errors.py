"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a file, field, option or model folder. The message is one line
    that names what is wrong and how to fix it; the CLI prints it without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))
