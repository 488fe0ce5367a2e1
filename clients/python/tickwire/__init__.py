"""Tickwire client for Python (asyncio): state and stream subscriptions with resume,
pipelined idempotent publishes, order books from snapshot + deltas, typed errors."""

from .book import CHECKSUM_LEVELS, OrderBook, checksum_of
from .client import Ack, BookWatch, Client, Message, Subscription, raw_data, watch_book
from .errors import (
    AuthError,
    ClosedError,
    EpochMismatchError,
    OffsetOutOfRangeError,
    RateLimitedError,
    RequestError,
    TickwireError,
    UnavailableError,
    error_for,
)

__version__ = "0.1.0"

__all__ = [
    "Ack", "AuthError", "BookWatch", "CHECKSUM_LEVELS", "Client", "ClosedError",
    "EpochMismatchError", "Message", "OffsetOutOfRangeError", "OrderBook", "RateLimitedError",
    "RequestError", "Subscription", "TickwireError", "UnavailableError", "checksum_of",
    "error_for", "raw_data", "watch_book",
]
