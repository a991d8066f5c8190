//! A string that is a credential. Its `Debug` and `Display` never show the value, so a
//! secret that ends up in a log line, an error or a `{:?}` prints as `<redacted>`.

use std::fmt;

/// A credential value (secret key, session token, bearer token, JWT). Shared, so
/// handing a cached token to many callers copies no bytes.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(std::sync::Arc<str>);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into().into())
    }

    /// The value itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether the secret is the empty string.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Self(value.into())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Self(value.into())
    }
}

/// Read from a JSON string (credential files); there is deliberately no
/// `Serialize`: a secret is only ever written on purpose, with [`Secret::expose`].
/// A value that is not a string is an error that does not quote it.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret::from).map_err(|e| {
            let shown = e.to_string();
            if shown.starts_with("missing field") {
                e
            } else {
                serde::de::Error::custom(
                    "expected a string (the value is not shown: it is a secret)",
                )
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_value() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "<redacted> <redacted>");
        assert_eq!(s.expose(), "hunter2");
    }
}
