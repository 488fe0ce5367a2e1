// Applies book channel values (one JSON `data` per line, as a subscriber received them) with
// the reference client (docs/book-client.js) and prints what it holds, as one JSON line:
// {"results": ["ok", ...], "seq": N, "checksum": C, "bids": [...], "asks": [...]}.
// Also checks the documented checksum examples. Used by crates/cli/tests/book_client_js.rs.
"use strict";
const fs = require("fs");
const path = require("path");
const { Book, crc32, compare } = require(path.join(__dirname, "../../../docs/book-client.js"));

// The examples of docs/books.md, as crates/feed/src/l2.rs computes them.
const assert = (ok, what) => { if (!ok) { console.error("FAILED: " + what); process.exit(1); } };
assert(crc32("1123123115") === 1082956473, "crc32 of the example book");
const ex = new Book();
assert(ex.apply({ snapshot: true, seq: 1, checksum: 1082956473, bids: [["1.1", "5"]],
  asks: [["1.12", "3"], ["1.2", "3"]] }) === "ok", "the example snapshot verifies");
assert(ex.apply({ seq: 2, prev: 1, checksum: 90119300, bids: [["1.1", "0"], ["1.09", "2"]],
  asks: [] }) === "ok", "the example delta verifies");
assert(ex.apply({ seq: 4, prev: 3, checksum: 0, bids: [], asks: [] }) === "gap", "a gap is seen");
assert(crc32("12010") === 3299771535, "crc32 of 0.00120 / 010");
assert(compare("1.10001", "1.1") > 0 && compare("1.10", "1.1") === 0 && compare("-2", "-10") > 0
  && compare("0.9", "10") < 0, "exact decimal order");

const book = new Book();
const results = fs.readFileSync(process.argv[2], "utf8").split("\n").filter(Boolean)
  .map((line) => book.apply(JSON.parse(line)));
console.log(JSON.stringify({ results, seq: book.seq, checksum: book.checksum(), ...book.levels() }));
