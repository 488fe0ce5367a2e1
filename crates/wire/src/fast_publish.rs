//! The fast path for the one command a publisher sends in a loop:
//! `{"id":N,"op":"publish","channel":"…","data":…}` (with an optional `msg_id`).
//!
//! serde_json takes about a microsecond to read such a frame into the general command struct
//! (it matches nineteen optional fields and checks UTF-8 string by string), which was the largest
//! single cost of one WebSocket connection publishing as fast as it can. This scanner reads only
//! that shape, in one pass, and answers `None` for anything else — another key, an escape in a
//! key or in the channel, a byte outside ASCII, a number that is not a plain integer, a
//! repeated key, deep nesting — so [`crate::parse_command`] falls back to serde, which gives the
//! same answer or the same error it always did. Whenever this returns `Some`, the serde path
//! returns the equal command: the unit and property tests here and the `ws_command` fuzz target
//! check exactly that.

use tickwire_model::Channel;

use crate::command::{Command, Op, MAX_MSG_ID_LEN};

/// Nesting accepted inside `data` before handing the frame to serde (whose own limit is 128).
const MAX_DEPTH: usize = 64;

/// The bytes that end a run of plain string content (see [`Scan::run`]).
const STOP: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = c < 0x20 || c >= 0x80 || c == b'"' as usize || c == b'\\' as usize;
        c += 1;
    }
    t
};

struct Scan<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scan<'a> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// Skips string bytes that need no attention: everything but the closing quote, a
    /// backslash, a control character and a byte outside ASCII. Eight bytes at a time while
    /// none of them needs attention (chat text is long), then byte by byte through a table.
    fn run(&mut self) {
        const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
        const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
        let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
        while let Some(chunk) = self.b.get(self.i..self.i + 8) {
            let Ok(bytes) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let w = u64::from_ne_bytes(bytes);
            let stop = has_zero(w ^ (ONES * u64::from(b'"')))
                | has_zero(w ^ (ONES * u64::from(b'\\')))
                | (w.wrapping_sub(ONES * 0x20) & !w & HIGH)
                | (w & HIGH);
            if stop != 0 {
                break;
            }
            self.i += 8;
        }
        while let Some(&c) = self.b.get(self.i) {
            if STOP[usize::from(c)] {
                break;
            }
            self.i += 1;
        }
    }

    /// A string with no escapes (the opening quote is next); its bytes, all ASCII.
    fn plain_str(&mut self) -> Option<&'a [u8]> {
        self.eat(b'"')?;
        let start = self.i;
        self.run();
        // Escapes, control characters and non-ASCII bytes: serde's business.
        self.eat(b'"')?;
        Some(&self.b[start..self.i - 1])
    }

    /// A JSON string that may hold the escapes JSON allows (the opening quote is next).
    fn any_str(&mut self) -> Option<()> {
        self.eat(b'"')?;
        loop {
            self.run();
            match *self.b.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(());
                }
                b'\\' => {
                    self.i += 1;
                    match *self.b.get(self.i)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
                        b'u' => {
                            let hex = self.b.get(self.i + 1..self.i + 5)?;
                            if !hex.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            self.i += 5;
                        }
                        _ => return None,
                    }
                }
                _ => return None,
            }
        }
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        self.i - start
    }

    /// A JSON number, by RFC 8259's grammar.
    fn number(&mut self) -> Option<()> {
        let _ = self.eat(b'-');
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if let Some(b'0'..=b'9') = self.peek() {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.eat(b'.').is_some() && self.digits() == 0 {
            return None;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| self.i = end)
    }

    /// Any JSON value, validated and skipped.
    fn value(&mut self, depth: usize) -> Option<()> {
        match self.peek()? {
            b'"' => self.any_str(),
            b'{' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                self.ws();
                if self.eat(b'}').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.any_str()?;
                    self.ws();
                    self.eat(b':')?;
                    self.ws();
                    self.value(depth)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b'}' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b'[' => {
                let depth = depth.checked_sub(1)?;
                self.i += 1;
                self.ws();
                if self.eat(b']').is_some() {
                    return Some(());
                }
                loop {
                    self.ws();
                    self.value(depth)?;
                    self.ws();
                    match self.peek()? {
                        b',' => self.i += 1,
                        b']' => {
                            self.i += 1;
                            return Some(());
                        }
                        _ => return None,
                    }
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// A command id: a plain non-negative integer that fits in u64.
    fn id(&mut self) -> Option<u64> {
        let start = self.i;
        if self.digits() == 0 {
            return None;
        }
        let text = &self.b[start..self.i];
        if text.len() > 1 && text[0] == b'0' {
            return None; // not JSON; serde says why
        }
        if let Some(b'.' | b'e' | b'E') = self.peek() {
            return None; // a float: serde refuses it as an id
        }
        text.iter().try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
    }
}

/// The publish in `frame` when it has the plain shape; `None` sends it to the general parser.
pub(crate) fn fast_publish(frame: &[u8]) -> Option<Command> {
    let mut s = Scan { b: frame, i: 0 };
    let (mut id, mut op, mut channel, mut msg_id, mut data) = (None, false, None, None, None);
    s.ws();
    s.eat(b'{')?;
    loop {
        s.ws();
        let key = s.plain_str()?;
        s.ws();
        s.eat(b':')?;
        s.ws();
        match key {
            b"id" if id.is_none() => id = Some(s.id()?),
            b"op" if !op => {
                if s.plain_str()? != b"publish" {
                    return None;
                }
                op = true;
            }
            b"channel" if channel.is_none() => channel = Some(s.plain_str()?),
            b"msg_id" if msg_id.is_none() => {
                let m = s.plain_str()?;
                if m.is_empty() || m.len() > MAX_MSG_ID_LEN {
                    return None;
                }
                msg_id = Some(m);
            }
            b"data" if data.is_none() => {
                if s.peek()? == b'n' {
                    return None; // `"data":null` reads as absent: serde's error
                }
                let start = s.i;
                s.value(MAX_DEPTH)?;
                data = Some(&frame[start..s.i]);
            }
            _ => return None,
        }
        s.ws();
        match s.peek()? {
            b',' => s.i += 1,
            b'}' => {
                s.i += 1;
                break;
            }
            _ => return None,
        }
    }
    s.ws();
    if s.i != frame.len() || !op {
        return None;
    }
    // All ASCII, checked by the scan: these conversions cannot fail, and only the data's
    // (the longest) costs more than a few bytes' check.
    let channel = Channel::parse_cached(std::str::from_utf8(channel?).ok()?).ok()?;
    let msg_id = match msg_id {
        Some(m) => Some(std::str::from_utf8(m).ok()?.to_owned()),
        None => None,
    };
    let data = std::str::from_utf8(data?).ok()?;
    Some(Command {
        id: id?,
        op: Op::Publish {
            channel,
            msg_id,
            data: data.into(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::parse_command_general;
    use proptest::strategy::Strategy;

    /// Where the fast path answers, the general parser answers the same.
    fn agree(frame: &str) -> Option<Command> {
        let fast = fast_publish(frame.as_bytes());
        if let Some(c) = &fast {
            assert_eq!(
                parse_command_general(frame.as_bytes()).as_ref(),
                Ok(c),
                "{frame}"
            );
        }
        fast
    }

    #[test]
    fn reads_the_plain_publish_shapes() {
        for frame in [
            r#"{"id":1,"op":"publish","channel":"quotes.EURUSD","data":{"bid":"1.1","n":[1,2.5e-3,-0,true,false,null,{}]}}"#,
            r#" { "op" : "publish" , "data" : "x\"\\\/\b\f\n\r\t\u00e9" , "channel" : "chat.a" , "id" : 0 , "msg_id" : "m-1" } "#,
            r#"{"id":18446744073709551615,"op":"publish","channel":"quotes.X","data":[]}"#,
            r#"{"id":7,"op":"publish","channel":"quotes.X","data":-12.5E+7}"#,
        ] {
            assert!(agree(frame).is_some(), "{frame}");
        }
    }

    #[test]
    fn hands_everything_else_to_the_general_parser() {
        for frame in [
            r#"{"id":1,"op":"subscribe","channel":"quotes.X"}"#,
            r#"{"op":"subscribe","id":1,"channel":"quotes.X","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":null}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X"}"#,
            r#"{"id":1,"op":"publish","data":1}"#,
            r#"{"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":-1,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1.0,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":01,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":18446744073709551616,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"nope","data":1}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"id":2}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"extra":2}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"msg_id":""}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1,"msg_id":null}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":"é"}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":"\x"}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":"\u12"}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":[1,]}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":{"a":1,}}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":01}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1.}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1e}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":tru}"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1} x"#,
            r#"{"id":1,"op":"publish","channel":"quotes.X","data":1"#,
            r#"{"i\u0064":1,"op":"publish","channel":"quotes.X","data":1}"#,
            r#"[1,"publish"]"#,
            "{\"id\":1,\"op\":\"publish\",\"channel\":\"quotes.X\",\"data\":\"a\tb\"}",
        ] {
            assert!(agree(frame).is_none(), "{frame}");
        }
        let deep = format!(
            r#"{{"id":1,"op":"publish","channel":"quotes.X","data":{}1{}}}"#,
            "[".repeat(MAX_DEPTH + 1),
            "]".repeat(MAX_DEPTH + 1)
        );
        assert!(agree(&deep).is_none());
        let ok = format!(
            r#"{{"id":1,"op":"publish","channel":"quotes.X","data":{}1{}}}"#,
            "[".repeat(MAX_DEPTH),
            "]".repeat(MAX_DEPTH)
        );
        assert!(agree(&ok).is_some());
    }

    proptest::proptest! {
        /// Frames assembled from publish-like pieces, valid and not: wherever the fast path
        /// answers, the general parser gives the same command.
        #[test]
        fn agrees_with_the_general_parser(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(r#""id":1"#.to_string()),
                    "[0-9]{1,21}".prop_map(|n| format!(r#""id":{n}"#)),
                    proptest::strategy::Just(r#""op":"publish""#.to_string()),
                    proptest::strategy::Just(r#""op":"ping""#.to_string()),
                    "[a-z.A-Z]{0,12}".prop_map(|c| format!(r#""channel":"{c}""#)),
                    "[ -~]{0,6}".prop_map(|m| format!(r#""msg_id":"{m}""#)),
                    r#"[ -~\t\n\\]{0,24}"#.prop_map(|d| format!(r#""data":{d}"#)),
                    r#"[\[\]{}",:0-9a-z.eE+\- \\]{0,24}"#.prop_map(|d| format!(r#""data":{d}"#)),
                ],
                0..7,
            ),
            sep in "[ ,]{1,2}",
        ) {
            let frame = format!("{{{}}}", parts.join(&sep));
            let _ = agree(&frame);
            let plain = format!(
                r#"{{"id":3,"op":"publish","channel":"quotes.A","data":{{"k":{}}}}}"#,
                serde_json::json!(parts.concat())
            );
            let _ = agree(&plain);
        }
    }
}
