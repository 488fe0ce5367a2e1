//! Text handling shared by indexing, queries and snippets: what text a message holds, how it
//! is cut into words, how a query string is read, and how a snippet is marked.

use tantivy::tokenizer::{
    AsciiFoldingFilter, LowerCaser, RemoveLongFilter, TextAnalyzer, Token, TokenStream, Tokenizer,
};
use unicode_segmentation::{UWordBoundIndices, UnicodeSegmentation};

/// The name the analyzer is registered under in the index.
pub const ANALYZER: &str = "tw_words";

/// Words longer than this (in bytes) are not indexed: base64 blobs and URLs' tails would only
/// grow the term dictionary.
const MAX_WORD_BYTES: usize = 64;

/// The analyzer of every text field and query: Unicode words (UAX #29), lowercased, folded
/// to ASCII where a letter has an ASCII form (`café` matches `cafe`).
pub fn analyzer() -> TextAnalyzer {
    TextAnalyzer::builder(WordTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_WORD_BYTES))
        .filter(LowerCaser)
        .filter(AsciiFoldingFilter)
        .build()
}

/// Splits text at Unicode word boundaries (UAX #29) and keeps the pieces that hold a letter or
/// a digit. Unlike splitting at whitespace or ASCII punctuation, this cuts Chinese and Japanese
/// text into single ideographs (a query word of several becomes a phrase of them), keeps
/// `don't` and `3.14` whole, and treats every script's letters as letters.
#[derive(Clone, Default)]
pub struct WordTokenizer {
    token: Token,
}

pub struct WordStream<'a> {
    words: UWordBoundIndices<'a>,
    token: &'a mut Token,
}

impl Tokenizer for WordTokenizer {
    type TokenStream<'a> = WordStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> WordStream<'a> {
        self.token.reset();
        WordStream {
            words: text.split_word_bound_indices(),
            token: &mut self.token,
        }
    }
}

impl TokenStream for WordStream<'_> {
    fn advance(&mut self) -> bool {
        for (at, word) in self.words.by_ref() {
            if word.chars().any(char::is_alphanumeric) {
                self.token.text.clear();
                self.token.text.push_str(word);
                self.token.offset_from = at;
                self.token.offset_to = at + word.len();
                self.token.position = self.token.position.wrapping_add(1);
                return true;
            }
        }
        false
    }

    fn token(&self) -> &Token {
        self.token
    }

    fn token_mut(&mut self) -> &mut Token {
        self.token
    }
}

/// The words of `text` as the index has them.
pub fn words(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut s = analyzer.token_stream(text);
    while let Some(t) = s.next() {
        out.push(t.text.clone());
    }
    out
}

/// The searchable text of a message: every string in its JSON data, the author stamp
/// (`from`) and amendment keys left out, joined by newlines. Keys are not text, numbers are
/// not words anyone searches chat for.
pub fn message_text(data: &serde_json::Value) -> String {
    fn walk(v: &serde_json::Value, top: bool, out: &mut String) {
        match v {
            serde_json::Value::String(s) => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(s);
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, false, out)),
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    if top && k == "from" {
                        continue;
                    }
                    walk(v, false, out);
                }
            }
            _ => {}
        }
    }
    let mut out = String::new();
    walk(data, true, &mut out);
    out
}

/// One part of a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Words that must appear one after the other (a single word is a phrase of one).
    Phrase(Vec<String>),
    /// Words one after the other, the last one a prefix (`hel*`, `"hello wor"*`).
    Prefix(Vec<String>),
}

/// A query read: what must match, what must not.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub must: Vec<Part>,
    pub must_not: Vec<Part>,
}

impl Parsed {
    /// The exact words and the prefixes a snippet marks.
    pub fn marks(&self) -> (Vec<String>, Vec<String>) {
        let (mut exact, mut prefixes) = (Vec::new(), Vec::new());
        for p in &self.must {
            match p {
                Part::Phrase(w) => exact.extend(w.iter().cloned()),
                Part::Prefix(w) => {
                    if let Some((last, rest)) = w.split_last() {
                        exact.extend(rest.iter().cloned());
                        prefixes.push(last.clone());
                    }
                }
            }
        }
        (exact, prefixes)
    }
}

/// Reads a query: `words` (all must appear), `"a phrase"`, `prefix*`, `"a phrase pre"*`, and
/// `-word` / `-"a phrase"` to exclude. Every word goes through the index's analyzer, so a
/// query word that the analyzer cuts in several (`e-mail`, `東京`) is a phrase of them.
pub fn parse_query(analyzer: &mut TextAnalyzer, q: &str) -> Parsed {
    let mut out = Parsed::default();
    let mut rest = q.trim_start();
    while !rest.is_empty() {
        let negate = rest.starts_with('-') && rest.len() > 1;
        if negate {
            rest = &rest[1..];
        }
        let (raw, quoted, after) = if let Some(r) = rest.strip_prefix('"') {
            match r.find('"') {
                Some(end) => (&r[..end], true, &r[end + 1..]),
                None => (r, true, ""),
            }
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            (&rest[..end], false, &rest[end..])
        };
        let (prefix, after) = if quoted {
            match after.strip_prefix('*') {
                Some(a) => (true, a),
                None => (false, after),
            }
        } else {
            (raw.ends_with('*'), after)
        };
        let text = if !quoted && prefix {
            raw.trim_end_matches('*')
        } else {
            raw
        };
        let w = words(analyzer, text);
        if !w.is_empty() {
            let part = if prefix {
                Part::Prefix(w)
            } else {
                Part::Phrase(w)
            };
            if negate {
                out.must_not.push(part);
            } else {
                out.must.push(part);
            }
        }
        rest = after.trim_start();
    }
    out
}

/// Characters of context a snippet shows before its first match.
const SNIPPET_BEFORE: usize = 40;
/// Most characters a snippet shows.
const SNIPPET_CHARS: usize = 200;

/// A piece of `text` around its first match, HTML-escaped, every matching word in
/// `<mark>`…`</mark>`. Matching is by the analyzer's words, so it marks what the index matched
/// (`Café` for `cafe`), prefixes included.
pub fn snippet(
    analyzer: &mut TextAnalyzer,
    text: &str,
    exact: &[String],
    prefixes: &[String],
) -> String {
    let mut hits: Vec<(usize, usize)> = Vec::new();
    {
        let mut s = analyzer.token_stream(text);
        while let Some(t) = s.next() {
            if exact.contains(&t.text) || prefixes.iter().any(|p| t.text.starts_with(p.as_str())) {
                hits.push((t.offset_from, t.offset_to));
            }
        }
    }
    // The window: from a little before the first match, whole characters only.
    let first = hits.first().map_or(0, |h| h.0);
    let mut start = first;
    let mut back = 0;
    while start > 0 && back < SNIPPET_BEFORE {
        start -= 1;
        while start > 0 && !text.is_char_boundary(start) {
            start -= 1;
        }
        back += 1;
    }
    // Start at a word boundary when one is near.
    if start > 0 {
        if let Some(sp) = text[start..first].find(char::is_whitespace) {
            start += sp + 1;
        }
    }
    let end = text[start..]
        .char_indices()
        .nth(SNIPPET_CHARS)
        .map_or(text.len(), |(i, _)| start + i);
    let mut out = String::with_capacity(end - start + 32);
    if start > 0 {
        out.push('…');
    }
    let mut at = start;
    for (from, to) in hits {
        if from < at || to > end {
            continue;
        }
        escape(&text[at..from], &mut out);
        out.push_str("<mark>");
        escape(&text[from..to], &mut out);
        out.push_str("</mark>");
        at = to;
    }
    escape(&text[at..end], &mut out);
    if end < text.len() {
        out.push('…');
    }
    out
}

fn escape(s: &str, out: &mut String) {
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_unicode_lowercased_and_folded() {
        let mut a = analyzer();
        assert_eq!(
            words(&mut a, "Café DON'T stop, Straße 3.14"),
            ["cafe", "don't", "stop", "strasse", "3.14"]
        );
        // Ideographs one by one; Cyrillic and Greek lowercased.
        assert_eq!(words(&mut a, "東京タワー"), ["東", "京", "タワー"]);
        assert_eq!(words(&mut a, "Привет ΚΌΣΜΕ"), ["привет", "κόσμε"]);
        assert!(words(&mut a, " -- !! ").is_empty());
    }

    #[test]
    fn queries_read_phrases_prefixes_and_exclusions() {
        let mut a = analyzer();
        let p = parse_query(
            &mut a,
            r#"Hello "big Cat" wor* -spam -"no way" "fast ca"* 東京"#,
        );
        assert_eq!(
            p.must,
            vec![
                Part::Phrase(vec!["hello".into()]),
                Part::Phrase(vec!["big".into(), "cat".into()]),
                Part::Prefix(vec!["wor".into()]),
                Part::Prefix(vec!["fast".into(), "ca".into()]),
                Part::Phrase(vec!["東".into(), "京".into()]),
            ]
        );
        assert_eq!(
            p.must_not,
            vec![
                Part::Phrase(vec!["spam".into()]),
                Part::Phrase(vec!["no".into(), "way".into()])
            ]
        );
        // An unclosed quote runs to the end; punctuation alone is nothing.
        let p = parse_query(&mut a, r#""open ended"#);
        assert_eq!(
            p.must,
            vec![Part::Phrase(vec!["open".into(), "ended".into()])]
        );
        assert_eq!(parse_query(&mut a, "!!! -").must, vec![]);
    }

    #[test]
    fn snippets_mark_matches_and_escape_html() {
        let mut a = analyzer();
        let s = snippet(
            &mut a,
            "<b>Café</b> is open & the caffeine flows",
            &["cafe".into()],
            &["caff".into()],
        );
        assert_eq!(
            s,
            "&lt;b&gt;<mark>Café</mark>&lt;/b&gt; is open &amp; the <mark>caffeine</mark> flows"
        );
        let long = format!("{} needle {}", "word ".repeat(100), "tail ".repeat(100));
        let s = snippet(&mut a, &long, &["needle".into()], &[]);
        assert!(s.starts_with('…') && s.ends_with('…'), "{s}");
        assert!(s.contains("<mark>needle</mark>"), "{s}");
        assert!(s.chars().count() < 220, "{s}");
    }

    #[test]
    fn the_text_of_a_message_leaves_out_its_author() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"from":{"sub":"42","info":{"name":"Ann"}},"text":"hi","att":[{"title":"doc"}],"n":3}"#,
        )
        .unwrap_or_default();
        let text = message_text(&v);
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort_unstable();
        assert_eq!(lines, ["doc", "hi"]);
        assert_eq!(message_text(&serde_json::json!("plain")), "plain");
    }
}
