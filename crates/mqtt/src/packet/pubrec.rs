//! PUBREC (spec 3.5).

super::ack::ack_packet!(
    /// QoS 2 delivery part 1: publish received.
    PubRec,
    PubRec,
    "A successful PUBREC for `packet_id`."
);
