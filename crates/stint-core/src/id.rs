//! Typed identifiers: an opaque string with a type prefix (`ses_…`, `prn_…`, `crd_…`).
//!
//! Ids are made from 128 random-or-time-ordered bits supplied by the caller (the core has no
//! randomness of its own) and parsed strictly, so a malformed id never reaches the store.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(String);

        impl $name {
            /// The type prefix, including the underscore.
            pub const PREFIX: &'static str = $prefix;

            /// Makes an id from 128 bits (a UUIDv7 in the server, so ids sort by creation time).
            pub fn from_u128(bits: u128) -> Self {
                Self(format!("{}{:032x}", $prefix, bits))
            }

            /// Parses an id; `None` unless it is the prefix followed by 32 lowercase hex digits.
            pub fn parse(s: &str) -> Option<Self> {
                let rest = s.strip_prefix($prefix)?;
                let ok = rest.len() == 32
                    && rest.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
                ok.then(|| Self(s.to_owned()))
            }

            /// The id as a string.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::parse(&s).ok_or_else(|| {
                    serde::de::Error::custom(concat!("not a valid ", $prefix, " id"))
                })
            }
        }
    };
}

typed_id!(
    /// Identifies a session.
    SessionId,
    "ses_"
);
typed_id!(
    /// Identifies a principal (an NHI or a human).
    PrincipalId,
    "prn_"
);
typed_id!(
    /// Identifies a credential issued to a session.
    CredentialId,
    "crd_"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_reject_malformed_input() {
        let id = SessionId::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
        assert_eq!(SessionId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(SessionId::parse("ses_"), None);
        assert_eq!(SessionId::parse("prn_0123456789abcdef0123456789abcdef"), None);
        assert_eq!(SessionId::parse("ses_0123456789ABCDEF0123456789abcdef"), None);
        assert_eq!(SessionId::parse("ses_0123456789abcdef0123456789abcdef0"), None);
        assert!(PrincipalId::parse("prn_0123456789abcdef0123456789abcdef").is_some());
    }
}
