// Tickwire book channel reference client (docs/books.md): keeps a local order book from a
// `book.<SYM>` snapshot and the deltas after it, and verifies each value's sequence number and
// checksum. Plain JavaScript, no dependencies; works in a browser (window.TickwireBook) and in
// Node (require). Tested against the server by crates/cli/tests/book_client_js.rs.
(function (root, factory) {
  if (typeof module === "object" && module.exports) module.exports = factory();
  else root.TickwireBook = factory();
})(typeof self !== "undefined" ? self : this, function () {
  "use strict";

  // Levels per side the checksum covers.
  const CHECKSUM_LEVELS = 10;

  // CRC32 (IEEE 802.3, as zlib's crc32).
  const TABLE = (() => {
    const t = new Uint32Array(256);
    for (let n = 0; n < 256; n++) {
      let c = n;
      for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
      t[n] = c >>> 0;
    }
    return t;
  })();

  function crc32(text) {
    let c = 0xffffffff;
    for (let i = 0; i < text.length; i++) c = TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
    return (c ^ 0xffffffff) >>> 0;
  }

  // A decimal's text in the checksum: the point removed, then leading zeros
  // ("0.00120" -> "120", "12.5" -> "125").
  function checksumText(decimal) {
    return decimal.replace(".", "").replace(/^0+/, "");
  }

  // Prices are exact decimals: "1.10" and "1.1" are one level, and they are ordered as
  // numbers of any precision, never as floats. The key is the normalized text.
  function normalize(decimal) {
    let sign = "";
    let t = decimal;
    if (t.startsWith("-")) { sign = "-"; t = t.slice(1); }
    let [int, frac = ""] = t.split(".");
    int = int.replace(/^0+/, "");
    frac = frac.replace(/0+$/, "");
    if (int === "" && frac === "") return { sign: "", int: "", frac: "" };
    return { sign, int, frac };
  }

  function key(decimal) {
    const n = normalize(decimal);
    return n.sign + n.int + "." + n.frac;
  }

  // < 0 when a < b, as exact numbers.
  function compare(a, b) {
    const x = normalize(a), y = normalize(b);
    if (x.sign !== y.sign) return x.sign === "-" ? -1 : 1;
    const neg = x.sign === "-" ? -1 : 1;
    if (x.int.length !== y.int.length) return neg * (x.int.length - y.int.length);
    if (x.int !== y.int) return neg * (x.int < y.int ? -1 : 1);
    const len = Math.max(x.frac.length, y.frac.length);
    const fx = x.frac.padEnd(len, "0"), fy = y.frac.padEnd(len, "0");
    return fx === fy ? 0 : neg * (fx < fy ? -1 : 1);
  }

  function isZero(size) {
    const n = normalize(size);
    return n.int === "" && n.frac === "";
  }

  class Book {
    constructor() {
      this.bids = new Map(); // key -> [price, size] as last sent
      this.asks = new Map();
      this.seq = 0;
      this.known = false;
    }

    // Applies a book channel value (the JSON `data` of a push). Returns "ok", "gap" (a delta
    // that does not follow the book held: subscribe again for a snapshot) or "mismatch" (the
    // checksum differs: the local book is wrong; subscribe again). After "gap" or "mismatch"
    // the book is unknown until the next snapshot.
    apply(value) {
      if (value.snapshot) {
        this.bids.clear();
        this.asks.clear();
      } else if (!this.known || value.prev !== this.seq) {
        this.known = false;
        return "gap";
      }
      for (const [side, levels] of [[this.bids, value.bids], [this.asks, value.asks]]) {
        for (const [price, size] of levels) {
          if (isZero(size)) side.delete(key(price));
          else side.set(key(price), [price, size]);
        }
      }
      this.seq = value.seq;
      this.known = true;
      if (this.checksum() !== value.checksum) {
        this.known = false;
        return "mismatch";
      }
      return "ok";
    }

    // Bids best (highest) first, asks best (lowest) first: [[price, size], ...].
    levels() {
      const bids = [...this.bids.values()].sort((a, b) => compare(b[0], a[0]));
      const asks = [...this.asks.values()].sort((a, b) => compare(a[0], b[0]));
      return { bids, asks };
    }

    // CRC32 of the best 10 asks (lowest first) then the best 10 bids (highest first), each
    // level as its price then its size, each with the point and then leading zeros removed.
    checksum() {
      const { bids, asks } = this.levels();
      let text = "";
      for (const [p, s] of asks.slice(0, CHECKSUM_LEVELS)) text += checksumText(p) + checksumText(s);
      for (const [p, s] of bids.slice(0, CHECKSUM_LEVELS)) text += checksumText(p) + checksumText(s);
      return crc32(text);
    }
  }

  return { Book, crc32, compare, checksumText, CHECKSUM_LEVELS };
});
