"""Order books from ``book.<SYM>`` (docs/books.md): a snapshot, then deltas with sequence
numbers and a CRC32 checksum of the best levels. Prices are exact decimals: ``Decimal``
keys ("1.10" and "1.1" are one level), ordered as numbers, never floats."""

from __future__ import annotations

import zlib
from decimal import Decimal
from typing import Any, Dict, List, Literal, Mapping, Optional, Tuple

Level = Tuple[str, str]
Result = Literal["ok", "gap", "mismatch"]

#: Levels per side the checksum covers.
CHECKSUM_LEVELS = 10


def checksum_text(decimal: str) -> str:
    """A decimal's text in the checksum: the point removed, then leading zeros."""
    return decimal.replace(".", "", 1).lstrip("0")


def checksum_of(bids: List[Level], asks: List[Level]) -> int:
    """CRC32 of the best 10 asks (lowest first) then the best 10 bids (highest first)."""
    text = "".join(checksum_text(p) + checksum_text(s) for p, s in asks[:CHECKSUM_LEVELS])
    text += "".join(checksum_text(p) + checksum_text(s) for p, s in bids[:CHECKSUM_LEVELS])
    return zlib.crc32(text.encode("ascii"))


class OrderBook:
    """A book kept from a book channel's values, checked against each value's ``seq``,
    ``prev`` and ``checksum``."""

    def __init__(self, symbol: str = "") -> None:
        self.symbol = symbol
        self.seq = 0
        #: False until a snapshot, and after a gap or a checksum mismatch.
        self.known = False
        #: Offset of the last message applied (set by ``watch_book``).
        self.offset: Optional[int] = None
        self._bids: Dict[Decimal, Level] = {}
        self._asks: Dict[Decimal, Level] = {}

    def apply(self, value: Mapping[str, Any]) -> Result:
        """Applies one value: "ok", "gap" (a delta that does not follow the book held) or
        "mismatch" (the checksum differs). After "gap" or "mismatch" the book is unknown
        until the next snapshot: subscribe again."""
        if value.get("snapshot"):
            self._bids.clear()
            self._asks.clear()
        elif not self.known or value.get("prev") != self.seq:
            self.known = False
            return "gap"
        for side, levels in ((self._bids, value.get("bids") or []), (self._asks, value.get("asks") or [])):
            for price, size in levels:
                key = Decimal(price)
                if Decimal(size) == 0:
                    side.pop(key, None)
                else:
                    side[key] = (price, size)
        self.seq = value["seq"]
        self.known = True
        if self.checksum() != value.get("checksum"):
            self.known = False
            return "mismatch"
        return "ok"

    @property
    def bids(self) -> List[Level]:
        """Bids, best (highest) first, as ``(price, size)`` strings as last sent."""
        return [self._bids[k] for k in sorted(self._bids, reverse=True)]

    @property
    def asks(self) -> List[Level]:
        """Asks, best (lowest) first."""
        return [self._asks[k] for k in sorted(self._asks)]

    def best_bid(self) -> Optional[Level]:
        return self._bids[max(self._bids)] if self._bids else None

    def best_ask(self) -> Optional[Level]:
        return self._asks[min(self._asks)] if self._asks else None

    def checksum(self) -> int:
        return checksum_of(self.bids, self.asks)
