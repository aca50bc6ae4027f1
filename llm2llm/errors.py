"""The exception types the CLI turns into a one-line message and a non-zero exit."""


class UserError(Exception):
    """Bad input from the user: a file, field, option or model folder. The message is one line
    that names what is wrong and how to fix it; the CLI prints it without a traceback."""

    def __init__(self, message: str):
        super().__init__(" ".join(message.split()))


class TeacherError(UserError):
    """A teacher server that failed every bounded retry: unreachable, erroring, hanging or sending
    something that is not a completion. The answers received before it are kept; a rerun continues."""
