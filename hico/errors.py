"""The error class for what a user gave (a file, a folder, a value): every layer may raise it.

``hico`` commands report it, and :class:`ValueError`, ``FileNotFoundError`` and ``FileExistsError``, as one line
(``hico: error: ...``) and exit 2; the app shows the line. It lives here, below every other module, so that the
library never imports the command line to raise it (``hico.cli.UserError`` is this class).
"""

from __future__ import annotations


class UserError(ValueError):
    """An error in the user's input: reported as one line, without a traceback."""
