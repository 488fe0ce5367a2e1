//! The OTLP trace messages Tickwire sends, derived with prost by hand so that building needs
//! neither protoc nor the opentelemetry-proto crates. Field numbers and types are exactly those
//! of opentelemetry-proto's `collector/trace/v1/trace_service.proto`, `trace/v1/trace.proto`,
//! `common/v1/common.proto` and `resource/v1/resource.proto`; fields Tickwire never sets (links,
//! events, trace_state, schema URLs, dropped counts) are left out, which protobuf allows.

/// `opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ExportTraceServiceRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<ResourceSpans>,
}

/// `opentelemetry.proto.trace.v1.ResourceSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<ScopeSpans>,
}

/// `opentelemetry.proto.resource.v1.Resource`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Resource {
    #[prost(message, repeated, tag = "1")]
    pub attributes: Vec<KeyValue>,
}

/// `opentelemetry.proto.trace.v1.ScopeSpans`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ScopeSpans {
    #[prost(message, optional, tag = "1")]
    pub scope: Option<InstrumentationScope>,
    #[prost(message, repeated, tag = "2")]
    pub spans: Vec<Span>,
}

/// `opentelemetry.proto.common.v1.InstrumentationScope`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct InstrumentationScope {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub version: String,
}

/// `opentelemetry.proto.trace.v1.Span`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Span {
    #[prost(bytes = "vec", tag = "1")]
    pub trace_id: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    pub span_id: Vec<u8>,
    /// Empty for a root span.
    #[prost(bytes = "vec", tag = "4")]
    pub parent_span_id: Vec<u8>,
    #[prost(string, tag = "5")]
    pub name: String,
    /// A [`SpanKind`].
    #[prost(enumeration = "SpanKind", tag = "6")]
    pub kind: i32,
    #[prost(fixed64, tag = "7")]
    pub start_time_unix_nano: u64,
    #[prost(fixed64, tag = "8")]
    pub end_time_unix_nano: u64,
    #[prost(message, repeated, tag = "9")]
    pub attributes: Vec<KeyValue>,
    #[prost(message, optional, tag = "15")]
    pub status: Option<Status>,
    /// Bits 0-7: the W3C trace flags; bit 8: "is the parent remote" is known; bit 9: it is.
    #[prost(fixed32, tag = "16")]
    pub flags: u32,
}

/// `opentelemetry.proto.trace.v1.Span.SpanKind`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum SpanKind {
    Unspecified = 0,
    Internal = 1,
    Server = 2,
    Client = 3,
    Producer = 4,
    Consumer = 5,
}

/// `opentelemetry.proto.trace.v1.Status`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Status {
    #[prost(string, tag = "2")]
    pub message: String,
    /// A [`StatusCode`].
    #[prost(enumeration = "StatusCode", tag = "3")]
    pub code: i32,
}

/// `opentelemetry.proto.trace.v1.Status.StatusCode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum StatusCode {
    Unset = 0,
    Ok = 1,
    Error = 2,
}

/// `opentelemetry.proto.common.v1.KeyValue`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct KeyValue {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(message, optional, tag = "2")]
    pub value: Option<AnyValue>,
}

/// `opentelemetry.proto.common.v1.AnyValue` (the scalar members of its `oneof`).
#[derive(Clone, PartialEq, prost::Message)]
pub struct AnyValue {
    #[prost(oneof = "Value", tags = "1, 2, 3, 4")]
    pub value: Option<Value>,
}

/// The `value` oneof of [`AnyValue`].
#[derive(Clone, PartialEq, prost::Oneof)]
pub enum Value {
    #[prost(string, tag = "1")]
    StringValue(String),
    #[prost(bool, tag = "2")]
    BoolValue(bool),
    #[prost(int64, tag = "3")]
    IntValue(i64),
    #[prost(double, tag = "4")]
    DoubleValue(f64),
}

impl KeyValue {
    /// A string attribute.
    pub fn str(key: &str, value: impl Into<String>) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(Value::StringValue(value.into())),
            }),
        }
    }

    /// An integer attribute.
    pub fn int(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.to_string(),
            value: Some(AnyValue {
                value: Some(Value::IntValue(value)),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use prost::Message;

    /// The bytes prost writes for a span, checked field by field against the protobuf
    /// encoding rules and trace.proto's numbers (a wrong tag or wire type would change them).
    #[test]
    fn a_span_encodes_with_trace_proto_field_numbers() {
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0xcd; 8],
            parent_span_id: vec![0xef; 8],
            name: "ack".into(),
            kind: SpanKind::Server as i32,
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            attributes: vec![KeyValue::int("items", 3)],
            status: None,
            flags: 0x301,
        };
        let b = span.encode_to_vec();
        let mut want = vec![0x0a, 16];
        want.extend([0xab; 16]);
        want.extend([0x12, 8]);
        want.extend([0xcd; 8]);
        want.extend([0x22, 8]);
        want.extend([0xef; 8]);
        want.extend([0x2a, 3, b'a', b'c', b'k']);
        want.extend([0x30, 2]); // kind = 6, varint SERVER
        want.extend([0x39, 1, 0, 0, 0, 0, 0, 0, 0]); // start = 7, fixed64
        want.extend([0x41, 2, 0, 0, 0, 0, 0, 0, 0]); // end = 8, fixed64
                                                     // attributes = 9: KeyValue{key=1 "items", value=2 AnyValue{int_value=3: 3}}
        want.extend([
            0x4a, 11, 0x0a, 5, b'i', b't', b'e', b'm', b's', 0x12, 2, 0x18, 3,
        ]);
        want.extend([0x85, 0x01, 0x01, 0x03, 0, 0]); // flags = 16, fixed32 (two-byte tag)
        assert_eq!(b, want);
        assert_eq!(Span::decode(b.as_slice()).unwrap(), span);
    }

    #[test]
    fn an_export_request_nests_resource_scope_and_spans() {
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue::str("service.name", "tw")],
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "t".into(),
                        version: String::new(),
                    }),
                    spans: vec![],
                }],
            }],
        };
        let b = req.encode_to_vec();
        // resource_spans = 1 { resource = 1 { attributes = 1 { key = 1, value = 2 { string = 1 }}},
        //                      scope_spans = 2 { scope = 1 { name = 1 } } }
        let kv = [
            0x0a, 12, b's', b'e', b'r', b'v', b'i', b'c', b'e', b'.', b'n', b'a', b'm', b'e', 0x12,
            4, 0x0a, 2, b't', b'w',
        ];
        let mut resource = vec![0x0a, kv.len() as u8];
        resource.extend(kv);
        let mut rs = vec![0x0a, resource.len() as u8];
        rs.extend(&resource);
        rs.extend([0x12, 5, 0x0a, 3, 0x0a, 1, b't']);
        let mut want = vec![0x0a, rs.len() as u8];
        want.extend(rs);
        assert_eq!(b, want);
    }
}
