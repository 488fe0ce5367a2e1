//! Topic names and filters ↔ channels and patterns: `/` ↔ `.`, `+` → `*`, `#` → `>`.
//!
//! A topic level may not contain `.` (it would split into two channel segments and the
//! mapping back would not give the same topic), and its characters must be ones a channel
//! name allows; anything else is refused rather than rewritten, so every topic a client sees
//! is one it can publish to and subscribe to unchanged.

use tickwire_model::{Channel, Pattern};

/// What a SUBSCRIBE topic filter means for the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// No wildcard: one channel.
    Channel(Channel),
    /// `+` / `#`: a hub pattern.
    Pattern(Pattern),
}

fn check_level(level: &str) -> Result<(), String> {
    if level.is_empty() {
        return Err("empty topic level".into());
    }
    if level.contains('.') {
        return Err(format!(
            "topic level {level:?} contains '.', which channel names use as the separator"
        ));
    }
    Ok(())
}

/// `chat/lobby` → `chat.lobby`.
pub fn topic_to_channel(topic: &str) -> Result<Channel, String> {
    for level in topic.split('/') {
        check_level(level)?;
    }
    Channel::parse_cached(&topic.replace('/', ".")).map_err(|e| e.to_string())
}

/// `quotes.EURUSD` → `quotes/EURUSD`.
pub fn channel_to_topic(channel: &str) -> String {
    channel.replace('.', "/")
}

/// A validated MQTT topic filter → channel or pattern.
pub fn filter_to_target(filter: &str) -> Result<Target, String> {
    if !filter.contains(['+', '#']) {
        return topic_to_channel(filter).map(Target::Channel);
    }
    let levels: Vec<&str> = filter.split('/').collect();
    let mut segs: Vec<&str> = Vec::with_capacity(levels.len() + 1);
    for level in &levels {
        match *level {
            "+" => segs.push("*"),
            "#" => segs.push(">"),
            other => {
                check_level(other)?;
                segs.push(other);
            }
        }
    }
    // `#` alone means every topic; hub patterns need a namespace segment, and every channel
    // has one, so `*.>` matches exactly the same set.
    if segs == [">"] {
        segs = vec!["*", ">"];
    }
    Pattern::parse(&segs.join("."))
        .map(Target::Pattern)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_map_both_ways() {
        let c = topic_to_channel("quotes/EURUSD").unwrap();
        assert_eq!(c.as_str(), "quotes.EURUSD");
        assert_eq!(channel_to_topic(c.as_str()), "quotes/EURUSD");
        assert_eq!(
            topic_to_channel("candles/EURUSD/1m").unwrap().as_str(),
            "candles.EURUSD.1m"
        );
        assert!(topic_to_channel("quotes/EUR.USD").is_err());
        assert!(topic_to_channel("quotes/EUR USD").is_err());
        assert!(topic_to_channel("quotes//x").is_err());
        assert!(topic_to_channel("$SYS/x").is_err());
        assert!(topic_to_channel("chat").is_err());
    }

    #[test]
    fn filters_map_to_patterns() {
        let p = |f| match filter_to_target(f).unwrap() {
            Target::Pattern(p) => p.as_str().to_string(),
            Target::Channel(c) => format!("channel:{}", c.as_str()),
        };
        assert_eq!(p("quotes/+"), "quotes.*");
        assert_eq!(p("chat/#"), "chat.>");
        assert_eq!(p("#"), "*.>");
        assert_eq!(p("+/lobby"), "*.lobby");
        assert_eq!(p("chat/lobby"), "channel:chat.lobby");
        assert!(filter_to_target("+").is_err());
        assert!(filter_to_target("quotes/a.b/+").is_err());
    }
}
