//! [`ConfigError`]: everything that can be wrong with a configuration, reported
//! all at once so `turnd check-config` can list every mistake in one run.
//!
//! Each problem names the config key it is about (and, for values, where the
//! bad value came from: the file, a `TURND_*` variable or a flag), because an
//! operator staring at a failed deploy needs to know *which line to edit*.

use std::fmt;

/// Where a setting's value came from. Later sources override earlier ones:
/// defaults < file < environment < flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    Default,
    File(String),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("the default"),
            Origin::File(path) => write!(f, "file {path}"),
            Origin::Env(var) => write!(f, "env {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// One thing wrong with the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    key: Option<String>,
    message: String,
}

impl Problem {
    /// A value that does not parse or is out of range:
    /// "config key `relay_ports`: `70000-80000` is not … [from flag --relay-ports]".
    pub(crate) fn invalid(
        key: impl Into<String>,
        reason: impl fmt::Display,
        origin: &Origin,
    ) -> Self {
        let key = key.into();
        let message = match origin {
            Origin::Default => format!("config key `{key}`: {reason}"),
            origin => format!("config key `{key}`: {reason} [from {origin}]"),
        };
        Problem {
            key: Some(key),
            message,
        }
    }

    /// A key that turnd does not know, with the closest known key if one is near.
    pub(crate) fn unknown_key(key: impl Into<String>, known: &[&str], origin: &Origin) -> Self {
        let key = key.into();
        // For `users[0].pasword` the candidate is the field name alone.
        let word = key.rsplit('.').next().unwrap_or(&key);
        let hint = match suggest(word, known) {
            Some(s) => format!(" (did you mean `{s}`?)"),
            None => String::new(),
        };
        Problem {
            message: format!("config key `{key}` is not known{hint} [from {origin}]"),
            key: Some(key),
        }
    }

    /// A `TURND_*` variable that names no key.
    pub(crate) fn unknown_env(var: &str, known_vars: &[String]) -> Self {
        let known: Vec<&str> = known_vars.iter().map(String::as_str).collect();
        let hint = match suggest(var, &known) {
            Some(s) => format!(" (did you mean `{s}`?)"),
            None => String::new(),
        };
        Problem {
            key: None,
            message: format!(
                "environment variable `{var}` is not a turnd setting{hint}; \
                 every TURND_* variable must name a config key"
            ),
        }
    }

    /// The file itself is the problem: missing, unreadable, not TOML.
    pub(crate) fn file(path: &str, reason: impl fmt::Display) -> Self {
        Problem {
            key: None,
            message: format!("config file `{path}`: {reason}"),
        }
    }

    /// The config key this problem is about, if it is about one.
    pub fn key(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The full human-readable message (the same text as `Display`).
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Why [`load`](super::load) refused a configuration. Holds every problem found
/// (never zero); `Display` prints one per line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    problems: Vec<Problem>,
}

impl ConfigError {
    /// `problems` must not be empty: an error with nothing wrong is a bug.
    pub(crate) fn new(problems: Vec<Problem>) -> Self {
        debug_assert!(!problems.is_empty(), "ConfigError with no problems");
        ConfigError { problems }
    }

    /// Every problem found, in the order keys are documented.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The config keys named by the problems (`users[1].key`, `relay_ports`, …).
    pub fn keys(&self) -> impl Iterator<Item = &str> {
        self.problems.iter().filter_map(Problem::key)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.problems.as_slice() {
            [one] => write!(f, "{one}"),
            many => {
                write!(f, "{} problems in the configuration:", many.len())?;
                for p in many {
                    write!(f, "\n  - {p}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ConfigError {}

/// The known name closest to `word`, if it is close enough to be a typo:
/// same name modulo case and `-`/`_`, or at most two edits away.
pub(crate) fn suggest<'a>(word: &str, known: &[&'a str]) -> Option<&'a str> {
    let norm = |s: &str| s.to_ascii_lowercase().replace('-', "_");
    let word = norm(word);
    known
        .iter()
        .map(|k| (edit_distance(&word, &norm(k)), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over chars; the names compared are a few dozen chars.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = substitute.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}
