#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Topic filter matching and validation tables (spec 4.7 and its examples).

use tickwire_mqtt::topic::{
    matches, parse_shared, validate_topic_filter, validate_topic_name, SharedSubscription,
};

#[test]
fn matching_table() {
    let table: &[(&str, &str, bool)] = &[
        // multi-level wildcard, including the parent level (4.7.1.2)
        ("sport/tennis/player1/#", "sport/tennis/player1", true),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/ranking",
            true,
        ),
        (
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon",
            true,
        ),
        ("sport/#", "sport", true),
        ("sport/#", "sports", false),
        ("#", "sport/tennis", true),
        ("#", "/", true),
        // single-level wildcard (4.7.1.3)
        ("sport/tennis/+", "sport/tennis/player1", true),
        ("sport/tennis/+", "sport/tennis/player2", true),
        ("sport/tennis/+", "sport/tennis/player1/ranking", false),
        ("sport/+", "sport", false),
        ("sport/+", "sport/", true),
        ("+", "sport", true),
        ("+/+", "/finance", true),
        ("/+", "/finance", true),
        ("+", "/finance", false),
        ("+/tennis/#", "sport/tennis/player1", true),
        ("+/tennis/#", "sport/tennis", true),
        ("+/+/+", "a/b", false),
        // exact and case-sensitive
        ("quotes/EURUSD", "quotes/EURUSD", true),
        ("quotes/EURUSD", "quotes/eurusd", false),
        ("quotes/EURUSD", "quotes/EURUSD/x", false),
        ("quotes/EURUSD/x", "quotes/EURUSD", false),
        // $-topics are not matched by a leading wildcard (4.7.2)
        ("#", "$SYS/broker/uptime", false),
        ("+/monitor/Clients", "$SYS/monitor/Clients", false),
        ("$SYS/#", "$SYS/monitor/Clients", true),
        ("$SYS/#", "$SYS", true),
        ("$SYS/monitor/+", "$SYS/monitor/Clients", true),
        ("a/#", "a/$b", true),
    ];
    for (filter, topic, expected) in table {
        validate_topic_filter(filter).unwrap();
        validate_topic_name(topic).unwrap();
        assert_eq!(matches(filter, topic), *expected, "{filter} vs {topic}");
    }
}

#[test]
fn invalid_filters_are_rejected() {
    for filter in [
        "",
        "sport/tennis#",
        "sport/tennis/#/ranking",
        "sport+",
        "sport/+tennis",
        "#/a",
        "a/#/",
        "a\0b",
        "$share/g",
        "$share//a",
        "$share/g+/a",
        "$share/g/",
    ] {
        let err = validate_topic_filter(filter).expect_err(filter);
        assert_eq!(
            err.reason_code(),
            tickwire_mqtt::ReasonCode::TopicFilterInvalid,
            "{filter}"
        );
    }
    for filter in [
        "#",
        "+",
        "+/+",
        "/",
        "//",
        "a//b",
        "sport/+/player1",
        "$SYS/#",
        "$share/g/a/#",
        "$share/g/#",
        "$sharex/a",
    ] {
        validate_topic_filter(filter).unwrap_or_else(|e| panic!("{filter}: {e}"));
    }
}

#[test]
fn invalid_topic_names_are_rejected() {
    for topic in ["", "a/+", "#", "a/#", "a\0"] {
        let err = validate_topic_name(topic).expect_err(topic);
        assert_eq!(
            err.reason_code(),
            tickwire_mqtt::ReasonCode::TopicNameInvalid
        );
    }
    for topic in ["/", "a", "$SYS/x", "quotes/EURUSD", " "] {
        validate_topic_name(topic).unwrap();
    }
    assert!(validate_topic_name(&"a".repeat(70_000)).is_err());
}

#[test]
fn shared_subscriptions_split_group_and_filter() {
    assert_eq!(
        parse_shared("$share/workers/quotes/+").unwrap(),
        Some(SharedSubscription {
            group: "workers",
            filter: "quotes/+"
        })
    );
    assert_eq!(parse_shared("quotes/+").unwrap(), None);
    assert!(parse_shared("$share/workers").is_err());
}
