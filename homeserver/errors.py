"""Matrix errors as exceptions.

Every failure a client or peer can see is a `MatrixError`: an HTTP status, a spec
`errcode` and a readable message. Handlers raise; one middleware (homeserver.http)
renders. This module has no I/O so pure code may raise these too.
"""

from __future__ import annotations

from typing import Any


class MatrixError(Exception):
    """An error with an HTTP status and a Matrix `errcode`."""

    def __init__(self, status: int, errcode: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.errcode = errcode
        self.message = message
        self.extra = extra

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"errcode": self.errcode, "error": self.message}
        body.update(self.extra)
        return body

    def __repr__(self) -> str:
        return f"MatrixError({self.status}, {self.errcode!r}, {self.message!r})"


def forbidden(message: str = "Forbidden") -> MatrixError:
    return MatrixError(403, "M_FORBIDDEN", message)


def invite_blocked() -> MatrixError:
    """v1.18 invite permission: the invitee blocks every invite."""
    return MatrixError(403, "M_INVITE_BLOCKED", "The user does not accept invites")


def not_found(message: str = "Not found") -> MatrixError:
    return MatrixError(404, "M_NOT_FOUND", message)


def bad_json(message: str) -> MatrixError:
    return MatrixError(400, "M_BAD_JSON", message)


def not_json(message: str = "Content not JSON.") -> MatrixError:
    return MatrixError(400, "M_NOT_JSON", message)


def invalid_param(message: str) -> MatrixError:
    return MatrixError(400, "M_INVALID_PARAM", message)


def missing_param(message: str) -> MatrixError:
    return MatrixError(400, "M_MISSING_PARAM", message)


def unknown_token(
    message: str = "Unrecognised access token.", soft_logout: bool = False
) -> MatrixError:
    return MatrixError(401, "M_UNKNOWN_TOKEN", message, soft_logout=soft_logout)


def missing_token(message: str = "Missing access token.") -> MatrixError:
    return MatrixError(401, "M_MISSING_TOKEN", message)


def unrecognized(message: str = "Unrecognized request") -> MatrixError:
    return MatrixError(404, "M_UNRECOGNIZED", message)


def limit_exceeded(retry_after_ms: int) -> MatrixError:
    return MatrixError(429, "M_LIMIT_EXCEEDED", "Too many requests", retry_after_ms=retry_after_ms)


def too_large(message: str = "Request too large") -> MatrixError:
    return MatrixError(413, "M_TOO_LARGE", message)


def unknown(message: str = "Internal server error", status: int = 500) -> MatrixError:
    return MatrixError(status, "M_UNKNOWN", message)
