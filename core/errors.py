"""The one error type a user sees: a sentence that names the file, line or field."""


class UserError(Exception):
    """Bad input from the user: the CLI prints it as one line and exits with code 2.

    Raise it with a message that names what is wrong and where (file:line, field), and
    what would be accepted. Never raise it for a bug in ftwiz itself.
    """

    exit_code = 2
