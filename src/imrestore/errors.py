"""The one exception type a user should ever see from imrestore.

Library code raises `ImrestoreError` with a message that says what was expected, what was found and which
file or value is at fault. Stage scripts and the CLI print that message and exit non-zero, so a user never
has to read a traceback from deep inside a library to learn that a download was truncated.
"""


class ImrestoreError(Exception):
    """A problem the user can act on; `str(error)` is the whole explanation."""



def exit_on_error(main):
    """Decorate a stage or CLI entry point: print an `ImrestoreError` plainly and exit 1, no traceback."""
    import functools
    import sys

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except ImrestoreError as error:
            from rich.console import Console
            from rich.text import Text

            message = Text("error: ", style="bold red") + Text(str(error))  # Text: no markup parsing of paths
            Console(stderr=True, highlight=False, soft_wrap=True).print(message)
            sys.exit(1)

    return wrapper
