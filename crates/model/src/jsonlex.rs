//! The pieces of a hand-written JSON reader for the publish hot path: whitespace, strings
//! without escapes, numbers and literals, over bytes known to be ASCII. Each returns `None`
//! when it is not sure, and the caller then asks serde, so an accepted text is always one
//! serde accepts the same way and every refusal is worded by serde. Used by the quote/trade
//! schema check here and by the JSON publish envelope reader in tickwire-wire.

/// The index after JSON whitespace from `i` (not form feed, which `is_ascii_whitespace` allows).
pub fn skip_ws(d: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = d.get(i) {
        i += 1;
    }
    i
}

/// A string without escapes starting at `i`: its content and the index after it. `None` for
/// an escape (it needs decoding), a control character (an error) or non-ASCII (UTF-8 rules):
/// serde's business.
pub fn string(d: &[u8], i: usize) -> Option<(&[u8], usize)> {
    if d.get(i) != Some(&b'"') {
        return None;
    }
    let start = i + 1;
    let rest = d.get(start..)?;
    // One pass to the closing quote, eight bytes per step (quote fields are 5-40 bytes, where
    // memchr's setup cost more than the search: ~10 % of publish CPU).
    let mut len = 0;
    for chunk in rest.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = special(u64::from_le_bytes(word));
        if m != 0 {
            len += (m.trailing_zeros() / 8) as usize;
            return end_of_string(rest, start, len);
        }
        len += 8;
    }
    while let Some(&b) = rest.get(len) {
        if matches!(b, b'"' | b'\\' | 0..=0x1f | 0x7f..) {
            return end_of_string(rest, start, len);
        }
        len += 1;
    }
    None
}

/// The string whose first special byte is at `rest[len]`: its end if that byte is the closing
/// quote; an escape, a control character or non-ASCII is serde's business.
fn end_of_string(rest: &[u8], start: usize, len: usize) -> Option<(&[u8], usize)> {
    (rest.get(len) == Some(&b'"')).then_some((rest.get(..len)?, start + len + 1))
}

/// A mask whose lowest set high bit marks the first byte of `x` (little-endian) that is `"`,
/// `\`, below 0x20 or 0x7f and above. SWAR: a borrow can only set flags in bytes above a true
/// match, so the lowest flag is exact (later flags may not be, and are never read).
fn special(x: u64) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_byte(x ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(x ^ (ONES * u64::from(b'\\')));
    let control = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
    // 0x7f (DEL) and every byte with the high bit set (non-ASCII).
    let high = (x.wrapping_add(ONES) | x) & HIGH;
    quote | backslash | control | high
}

/// The end of a scalar (string, number, `true`, `false`, `null`) starting at `i`.
pub fn scalar(d: &[u8], i: usize) -> Option<usize> {
    match d.get(i)? {
        b'"' => string(d, i).map(|(_, end)| end),
        b't' => literal(d, i, b"true"),
        b'f' => literal(d, i, b"false"),
        b'n' => literal(d, i, b"null"),
        b'-' | b'0'..=b'9' => number(d, i),
        _ => None,
    }
}

fn literal(d: &[u8], i: usize, word: &[u8]) -> Option<usize> {
    (d.get(i..i + word.len())? == word).then_some(i + word.len())
}

/// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?` (RFC 8259).
fn number(d: &[u8], mut i: usize) -> Option<usize> {
    let digits = |i: usize| {
        d.get(i..)
            .map_or(0, |t| t.iter().take_while(|b| b.is_ascii_digit()).count())
    };
    if d.get(i) == Some(&b'-') {
        i += 1;
    }
    match d.get(i)? {
        b'0' => i += 1,
        b'1'..=b'9' => i += digits(i),
        _ => return None,
    }
    if d.get(i) == Some(&b'.') {
        let n = digits(i + 1);
        if n == 0 {
            return None;
        }
        i += 1 + n;
    }
    if let Some(b'e' | b'E') = d.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = d.get(i) {
            i += 1;
        }
        let n = digits(i);
        if n == 0 {
            return None;
        }
        i += n;
    }
    Some(i)
}

/// A JSON integer at `d[i]` that fits an `i64` (what serde accepts for an `i64` field such as a quote's `ts`):
/// `-?(0|[1-9][0-9]*)` not followed by a fraction or exponent; its value and the index after it.
pub fn integer(d: &[u8], i: usize) -> Option<(i64, usize)> {
    let negative = d.get(i) == Some(&b'-');
    let digits = i + usize::from(negative);
    let n = d
        .get(digits..)?
        .iter()
        .take_while(|c| c.is_ascii_digit())
        .count();
    let end = digits + n;
    if n == 0
        || (d.get(digits) == Some(&b'0') && n > 1)
        || matches!(d.get(end), Some(b'.' | b'e' | b'E'))
    {
        return None;
    }
    // What `i64::from_str` gives (None on overflow), without its UTF-8 check and sign
    // parsing: the bytes are known ASCII digits. Negative values accumulate downwards so
    // `i64::MIN` parses.
    let mut v: i64 = 0;
    for &c in d.get(digits..end)? {
        let digit = i64::from(c - b'0');
        v = v.checked_mul(10)?;
        v = if negative {
            v.checked_sub(digit)?
        } else {
            v.checked_add(digit)?
        };
    }
    // serde_json reads `-0` as a float, which an `i64` field refuses.
    if v == 0 && negative {
        return None;
    }
    Some((v, end))
}

/// The members of the object starting at `d[i]` (its `{`): for each, `value(key, start)`
/// reads the member's value from `start` and returns the index after it, or `None` when not
/// sure. Returns the index after the object's `}`. Always inlined, like [`flat_object`]: as
/// plain calls through their closures the publish path lost ~6 % (A/B, 8 runs each).
#[inline(always)]
pub fn object(
    d: &[u8],
    i: usize,
    mut value: impl FnMut(&[u8], usize) -> Option<usize>,
) -> Option<usize> {
    if d.get(i) != Some(&b'{') {
        return None;
    }
    let mut i = skip_ws(d, i + 1);
    if d.get(i) == Some(&b'}') {
        return Some(i + 1);
    }
    loop {
        let (key, next) = string(d, i)?;
        i = skip_ws(d, next);
        if d.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(d, value(key, skip_ws(d, i + 1))?);
        match d.get(i)? {
            b',' => i = skip_ws(d, i + 1),
            b'}' => return Some(i + 1),
            _ => return None,
        }
    }
}

/// A flat object at `d[i]`: [`object`] whose values must be scalars; calls
/// `member(key, value_start, value_end)` for each (`false`: not sure).
#[inline(always)]
pub fn flat_object(
    d: &[u8],
    i: usize,
    mut member: impl FnMut(&[u8], usize, usize) -> bool,
) -> Option<usize> {
    object(d, i, |key, start| {
        let end = scalar(d, start)?;
        member(key, start, end).then_some(end)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte-at-a-time rule `string` implements eight bytes at a time.
    fn reference(d: &[u8], i: usize) -> Option<(&[u8], usize)> {
        if d.get(i) != Some(&b'"') {
            return None;
        }
        let rest = &d[i + 1..];
        let len = rest
            .iter()
            .position(|&b| matches!(b, b'"' | b'\\' | 0..=0x1f | 0x7f..))?;
        (rest[len] == b'"').then_some((&rest[..len], i + 1 + len + 1))
    }

    #[test]
    fn string_finds_the_first_special_byte_at_every_position() {
        for special in [b'"', b'\\', 0x00, 0x1f, 0x20, b'!', 0x7e, 0x7f, 0x80, 0xff] {
            for before in 0..20 {
                for after in 0..10 {
                    let mut d = vec![b'"'];
                    d.extend(std::iter::repeat_n(b'a', before));
                    d.push(special);
                    d.extend(std::iter::repeat_n(b'b', after));
                    d.push(b'"');
                    d.extend_from_slice(b"\"}\x01");
                    assert_eq!(
                        string(&d, 0),
                        reference(&d, 0),
                        "{special:#x} {before} {after}"
                    );
                }
            }
        }
        assert_eq!(string(b"\"abc", 0), None, "unterminated");
        assert_eq!(string(b"x\"\"", 0), None, "not a string");
        assert_eq!(string(b"\"\"", 0), Some((&b""[..], 2)));
    }
}
