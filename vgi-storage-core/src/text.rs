//! Small text helpers the backends and the facade share.

/// The bytes of `s` with every `%XX` escape decoded; a `%` not followed by two
/// hex digits is kept as it is.
///
/// Connection strings may percent-encode option names and values; callers
/// decide what to do with bytes that are not UTF-8.
///
/// ```
/// assert_eq!(vgi_storage_core::percent_decode("pass%77ord%zz"), b"password%zz");
/// ```
#[must_use]
pub fn percent_decode(s: &str) -> Vec<u8> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        if let Some(byte) = hex {
            out.push(byte);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}
