//! Single-character enumerations of the market-data messages.

use crate::error::{Error, Result};

macro_rules! char_enum {
    ($(#[$doc:meta])* $name:ident, $tag:expr, { $($(#[$vdoc:meta])* $variant:ident = $byte:expr,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every value, in wire order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The wire character.
            pub fn as_byte(self) -> u8 {
                match self { $($name::$variant => $byte,)+ }
            }

            /// Parses the wire character.
            pub fn from_byte(b: u8) -> Result<Self> {
                match b {
                    $($byte => Ok($name::$variant),)+
                    _ => Err(Error::InvalidValue { tag: $tag, reason: concat!("unknown ", stringify!($name)) }),
                }
            }

            // Generated for every enum; the span-based X/W decoders use `from_byte` instead.
            #[allow(dead_code)]
            pub(crate) fn from_field(f: &crate::field::Field<'_>) -> Result<Self> {
                Self::from_byte(f.as_char()?)
            }
        }
    };
}

char_enum!(
    /// MDEntryType (269).
    MdEntryType, 269, {
    /// 0
    Bid = b'0',
    /// 1
    Offer = b'1',
    /// 2
    Trade = b'2',
    /// 3
    IndexValue = b'3',
    /// 4
    OpeningPrice = b'4',
    /// 5
    ClosingPrice = b'5',
    /// 6
    SettlementPrice = b'6',
    /// 7
    TradingSessionHighPrice = b'7',
    /// 8
    TradingSessionLowPrice = b'8',
    /// 9
    TradingSessionVwapPrice = b'9',
    /// A
    Imbalance = b'A',
    /// B
    TradeVolume = b'B',
    /// C
    OpenInterest = b'C',
});

char_enum!(
    /// MDUpdateAction (279).
    MdUpdateAction, 279, {
    /// 0
    New = b'0',
    /// 1
    Change = b'1',
    /// 2
    Delete = b'2',
});

char_enum!(
    /// SubscriptionRequestType (263).
    SubscriptionRequestType, 263, {
    /// 0: one snapshot.
    Snapshot = b'0',
    /// 1: snapshot, then updates.
    SnapshotPlusUpdates = b'1',
    /// 2: stop the updates of an earlier request.
    Unsubscribe = b'2',
});

char_enum!(
    /// MDUpdateType (265).
    MdUpdateType, 265, {
    /// 0: updates as full refreshes (W).
    FullRefresh = b'0',
    /// 1: updates as incremental refreshes (X).
    IncrementalRefresh = b'1',
});

char_enum!(
    /// MDReqRejReason (281).
    MdReqRejReason, 281, {
    /// 0
    UnknownSymbol = b'0',
    /// 1
    DuplicateMdReqId = b'1',
    /// 2
    InsufficientBandwidth = b'2',
    /// 3
    InsufficientPermissions = b'3',
    /// 4
    UnsupportedSubscriptionRequestType = b'4',
    /// 5
    UnsupportedMarketDepth = b'5',
    /// 6
    UnsupportedMdUpdateType = b'6',
    /// 7
    UnsupportedAggregatedBook = b'7',
    /// 8
    UnsupportedMdEntryType = b'8',
    /// 9
    UnsupportedTradingSessionId = b'9',
    /// A
    UnsupportedScope = b'A',
    /// B
    UnsupportedOpenCloseSettlFlag = b'B',
    /// C
    UnsupportedMdImplicitDelete = b'C',
});
