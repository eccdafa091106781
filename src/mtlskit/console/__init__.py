"""``console``: the CA's operator console in the browser (``mtlskit ca console``).

IO shell: server-rendered pages (Jinja2, autoescaped, no script) over the CA's store;
approvers and viewers are told apart by their client certificates over mTLS. The
decisions are ``mtlskit.issue``'s.
"""

from mtlskit.console._app import PAGE_SIZE, SECURITY_HEADERS, Console
from mtlskit.console._auth import ConsoleRefused, ConsoleUser, Role, console_user, csrf_token

__all__ = [
    "PAGE_SIZE",
    "SECURITY_HEADERS",
    "Console",
    "ConsoleRefused",
    "ConsoleUser",
    "Role",
    "console_user",
    "csrf_token",
]
