use thiserror::Error;

/// Why a channel name, payload or namespace setting was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ModelError {
    #[error("channel name is empty")]
    EmptyChannel,
    #[error("channel name is {len} bytes; the limit is {max}")]
    ChannelTooLong { len: usize, max: usize },
    #[error(
        "channel `{channel}` has no namespace: expected `<namespace>.<name>`, e.g. `quotes.EURUSD`"
    )]
    NoNamespace { channel: String },
    #[error("channel `{channel}` contains {what}; allowed are letters, digits and `_ - . : @ =`, with no empty segment")]
    BadChannelChar { channel: String, what: String },
    #[error("field `{field}`: {value} is not a decimal string; prices and sizes are strings such as \"1.08412\", never JSON numbers")]
    BadDecimal { field: String, value: String },
    #[error("field `{field}`: {value} is outside the exact decimal range: {why}; prices and sizes have at most 28 digits after the point and at most 79228162514264337593543950335 as digits without the point (docs/protocol.md, Decimals)")]
    DecimalOutOfRange {
        field: String,
        value: String,
        why: String,
    },
    #[error("field `{field}` is required for the `{schema}` schema")]
    MissingField { field: String, schema: &'static str },
    #[error("`data` must be a JSON object for the `{schema}` schema")]
    NotAnObject { schema: &'static str },
    #[error("`data` is not valid JSON: {reason}")]
    BadJson { reason: String },
    #[error("pattern {pattern:?}: {why}")]
    BadPattern { pattern: String, why: String },
}
