//! The export file format: `vgi-storage-export`, version 1, JSON lines.
//!
//! Line 1 is a header object; every further line is one record; the last line
//! is an `end` record with the number of records and an FNV-1a 64 checksum of
//! every record line before it (bytes and newline). Byte strings are standard
//! base64. See the crate README for why JSON lines.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

/// The `format` field of the header.
pub(crate) const FORMAT: &str = "vgi-storage-export";
/// The version this build writes and reads.
pub(crate) const VERSION: u32 = 1;

/// Line 1 of an export.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Header {
    pub(crate) format: String,
    pub(crate) version: u32,
    /// The store exported, as its name.
    pub(crate) source: String,
    /// The source's id high-water mark when the export started.
    pub(crate) id_high_water: i64,
}

/// One record. Byte strings are base64.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub(crate) enum Record {
    /// A scope starts; its kv entries and queue items follow.
    Scope {
        scope: B64,
        last_write_millis: Option<i64>,
    },
    /// One kv entry.
    Kv { scope: B64, key: B64, value: B64 },
    /// One queue item, oldest first within its scope.
    Queue { scope: B64, item: B64 },
    /// One log entry; all log records come after the scopes, in ascending id order.
    Log {
        scope: B64,
        ns: B64,
        key: B64,
        id: i64,
        value: B64,
    },
    /// The last line.
    End { records: u64, fnv1a64: String },
}

/// Bytes serialised as a base64 string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct B64(pub(crate) Vec<u8>);

impl Serialize for B64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for B64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD
            .decode(s.as_bytes())
            .map(B64)
            .map_err(serde::de::Error::custom)
    }
}

/// FNV-1a, 64 bits: enough to catch a damaged or spliced file, not an attacker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Fnv(pub(crate) u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }

    pub(crate) fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}
