//! Secrets read from the environment: the admin API's token and the
//! cluster's shared secret.
//!
//! A [`Secret`] never prints itself (its `Debug` says `Secret(<redacted>)`
//! and it has no `Display` or `Serialize`), so it cannot reach a log line,
//! a metric, the dashboard or `weir spec` by accident; the job spec holds
//! only the names of the variables secrets are read from. Comparisons take
//! the same time whatever the guess, so a token cannot be found byte by
//! byte from response times.

use subtle::ConstantTimeEq;

/// A secret value (a token, a shared secret).
#[derive(Clone)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a secret could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("the environment variable {0} is set but empty (unset it to run without it)")]
    Empty(String),
    #[error("the environment variable {0} does not hold UTF-8 text")]
    NotUnicode(String),
    #[error("{0} is not a valid environment variable name")]
    BadName(String),
    #[error(
        "the secret{0} holds characters other than printable ASCII (it travels in HTTP headers)"
    )]
    NotPrintable(String),
}

impl Secret {
    /// A secret from its value; surrounding whitespace (the newline of a
    /// file mounted from a Kubernetes Secret) is not part of it.
    pub fn new(value: &str) -> Result<Self, SecretError> {
        let value = value.trim();
        if value.is_empty() {
            return Err(SecretError::Empty(String::new()));
        }
        if !value.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(SecretError::NotPrintable(String::new()));
        }
        Ok(Secret(value.to_owned()))
    }

    /// The secret in the environment variable `name`: none when it is
    /// unset, an error when it is set but empty (a Secret that lost its
    /// key should not quietly turn authentication off).
    pub fn from_env(name: &str) -> Result<Option<Self>, SecretError> {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(SecretError::BadName(name.to_owned()));
        }
        match std::env::var(name) {
            Ok(v) => Secret::new(&v).map(Some).map_err(|e| match e {
                SecretError::NotPrintable(_) => SecretError::NotPrintable(format!(" in {name}")),
                _ => SecretError::Empty(name.to_owned()),
            }),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(_)) => Err(SecretError::NotUnicode(name.to_owned())),
        }
    }

    /// The value, to put on the wire. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `offered` is this secret, in time that does not depend on
    /// where they differ.
    pub fn matches(&self, offered: &[u8]) -> bool {
        self.0.as_bytes().ct_eq(offered).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_never_prints_its_value() {
        let s = Secret::new("hunter2\n").expect("secret");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        assert!(!format!("{:?}", Some(s.clone())).contains("hunter2"));
        assert_eq!(s.expose(), "hunter2");
    }

    #[test]
    fn only_the_exact_value_matches() {
        let s = Secret::new("hunter2").expect("secret");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter"));
        assert!(!s.matches(b"hunter22"));
        assert!(!s.matches(b""));
    }

    #[test]
    fn an_empty_value_is_refused() {
        assert!(Secret::new("  \n").is_err());
        assert!(matches!(
            Secret::new("two words"),
            Err(SecretError::NotPrintable(_))
        ));
        assert!(matches!(
            Secret::from_env("WEIR_TEST_NO_SUCH_VARIABLE_9f3"),
            Ok(None)
        ));
        assert!(matches!(Secret::from_env(""), Err(SecretError::BadName(_))));
    }
}
