"""Typed errors: every error the client raises is a TickwireError whose ``code`` is the
server's error code (docs/protocol.md, "Errors") or one of the client's own
(``connection_closed``, ``client_closed``, ``connect_failed``)."""

from __future__ import annotations

import re
from typing import Optional


class TickwireError(Exception):
    """Base class: ``code`` is the server's (or the client's) error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class AuthError(TickwireError):
    """``unauthorized``, ``forbidden``, ``token_expired``: the credential does not allow it."""


class RequestError(TickwireError):
    """``bad_data``, ``bad_channel``, ``bad_request``, ``too_large``, ``unknown_namespace``, …:
    the request is wrong and retrying it cannot help."""


class EpochMismatchError(TickwireError):
    """``epoch_mismatch``: the stream was recreated and its offsets started again at 0.
    Subscribe again without ``from_`` (live) or with ``from_=0`` (replay the new stream)."""

    def __init__(self, message: str) -> None:
        super().__init__("epoch_mismatch", message)


class OffsetOutOfRangeError(TickwireError):
    """``offset_out_of_range``: ``from_`` is past the end of the stream."""

    def __init__(self, message: str) -> None:
        super().__init__("offset_out_of_range", message)


class RateLimitedError(TickwireError):
    """``rate_limited``: ``retry_after_ms`` says when to try again, when the server said."""

    def __init__(self, message: str) -> None:
        super().__init__("rate_limited", message)
        m = re.search(r"retry after (\d+) ms", message)
        self.retry_after_ms: Optional[int] = int(m.group(1)) if m else None


class UnavailableError(TickwireError):
    """``unavailable``: storage failure or shutdown; publishes are retried with their msg_id."""

    def __init__(self, message: str) -> None:
        super().__init__("unavailable", message)


class ClosedError(TickwireError):
    """The client was closed (``client_closed``) before the call completed."""

    def __init__(self, message: str = "the client was closed") -> None:
        super().__init__("client_closed", message)


def error_for(code: str, message: str) -> TickwireError:
    """The typed error for a server error code."""
    if code in ("unauthorized", "forbidden", "token_expired"):
        return AuthError(code, message)
    if code == "epoch_mismatch":
        return EpochMismatchError(message)
    if code == "offset_out_of_range":
        return OffsetOutOfRangeError(message)
    if code == "rate_limited":
        return RateLimitedError(message)
    if code == "unavailable":
        return UnavailableError(message)
    return RequestError(code, message)
