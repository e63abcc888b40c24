//! Showing connection strings without their secrets.
//!
//! A postgres connection string comes in two syntaxes, and either may carry a
//! password: a URL (`postgres://user:secret@host/db?password=secret`) or libpq
//! `key=value` pairs (`host=db password='s e c'`). Option names in a URL may
//! be percent-encoded (`pass%77ord=...`), and the client decodes them, so they
//! are compared after decoding. Anything that is not plainly a name is never
//! quoted in an error at all.

/// Whether an option `key` (already decoded) names a secret: `password`,
/// `sslpassword` and any other key mentioning a password, in any case.
fn is_secret_key(key: &str) -> bool {
    let key = key.trim().to_ascii_lowercase();
    key.contains("password") || key.contains("passwd") || key == "pwd"
}

/// `s` with `%XX` escapes decoded (bad escapes kept as they are), for comparing names.
fn percent_decoded(s: &str) -> String {
    String::from_utf8_lossy(&vgi_storage_core::percent_decode(s)).into_owned()
}

/// A connection string with every password replaced by `***`, in either syntax.
pub(crate) fn redact_connection_string(s: &str) -> String {
    if s.contains("://") {
        redact_url(s)
    } else {
        redact_key_values(s)
    }
}

/// `postgres://user:secret@host/db?password=x` -> `postgres://user:***@host/db?password=***`.
fn redact_url(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let (before_query, query) = rest
        .split_once('?')
        .map_or((rest, None), |(b, q)| (b, Some(q)));
    // The user info ends at the last '@' before the query: a password may hold
    // unescaped '/' or '@', which a stricter split would leave in sight.
    let base = match before_query.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}")
            } else {
                format!("{scheme}://{user}@{host}")
            }
        }
        None => format!("{scheme}://{before_query}"),
    };
    let Some(query) = query else {
        return base;
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| {
            let key = pair.split_once('=').map_or(pair, |(k, _)| k);
            if is_secret_key(&percent_decoded(key)) {
                format!("{key}=***")
            } else {
                pair.to_owned()
            }
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

/// libpq `key = value` pairs (values bare or single-quoted with `\` escapes)
/// with the values of secret keys replaced by `***`. Text that does not parse
/// is replaced whole: it cannot be shown safely.
fn redact_key_values(s: &str) -> String {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return "<connection string not shown>".to_owned();
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            let mut closed = false;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '\'' => {
                        closed = true;
                        break;
                    }
                    c => value.push(c),
                }
            }
            if !closed {
                return "<connection string not shown>".to_owned();
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.extend(chars.next());
                } else {
                    value.push(c);
                }
            }
        }
        if is_secret_key(&key) {
            out.push(format!("{key}=***"));
        } else if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '\'') {
            out.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        } else {
            out.push(format!("{key}={value}"));
        }
    }
    out.join(" ")
}

/// Whether `s` may be quoted in an error: a short plain word (a backend name,
/// a scheme), nothing that could be a connection string holding a password.
pub(crate) fn is_quotable_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t-pw";

    /// Every spelling of a password this test knows: in the URL's user info
    /// (with unescaped '/' and '@'), as a query option in any case or
    /// percent-encoded, as sslpassword, and as libpq key=value pairs bare,
    /// quoted, with spaces around '=' and with escapes.
    #[test]
    fn every_spelling_of_a_password_is_redacted() {
        let spellings = [
            format!("postgres://u:{SECRET}@h/db"),
            format!("postgresql://u:{SECRET}@h1,h2:5433/db?sslmode=disable"),
            format!("postgres://u:a/b@{SECRET}@h/db"),
            format!("postgres://u@h/db?password={SECRET}"),
            format!("postgres://u@h/db?PASSWORD={SECRET}&x=1"),
            format!("postgres://u@h/db?pass%77ord={SECRET}"),
            format!("postgres://u@h/db?%70%61%73%73%77%6F%72%64={SECRET}"),
            format!("postgres://u@h/db?sslpassword={SECRET}"),
            format!("host=h user=u password={SECRET}"),
            format!("host=h password='{SECRET} with spaces' dbname=d"),
            format!("host=h password = {SECRET}"),
            format!("password='it\\'s {SECRET}' host=h"),
            format!("host=h sslpassword={SECRET}"),
            format!("host=h PassWord={SECRET}"),
            format!("host=h password='{SECRET}"),
            format!("host=h garbage {SECRET}"),
        ];
        for s in &spellings {
            let shown = redact_connection_string(s);
            assert!(!shown.contains("s3cr3t"), "{s} -> {shown}");
        }
        assert_eq!(
            redact_connection_string("postgres://u:x@h/db?schema=a&password=y"),
            "postgres://u:***@h/db?schema=a&password=***"
        );
        assert_eq!(
            redact_connection_string("host=h user=u password='p w' application_name='a b'"),
            "host=h user=u password=*** application_name='a b'"
        );
    }

    #[test]
    fn only_plain_words_are_quotable() {
        assert!(is_quotable_name("sqlit"));
        assert!(!is_quotable_name("host=h password=x"));
        assert!(!is_quotable_name("user:pw@host"));
        assert!(!is_quotable_name(""));
    }
}
