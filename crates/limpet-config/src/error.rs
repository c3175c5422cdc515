//! Configuration errors: every error names the key path, the line/column where the
//! YAML parser knows it, and what to write instead.

use std::fmt;

/// One problem found in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path such as `pools.web.backends[2].address`; empty for the whole document.
    pub path: String,
    /// 1-based line and column, when known.
    pub location: Option<(usize, usize)>,
    pub message: String,
    /// What to write instead.
    pub hint: Option<String>,
}

impl ConfigError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            location: None,
            message: message.into(),
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some((line, col)) = self.location {
            write!(f, "line {line}, column {col}: ")?;
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)?;
        } else {
            write!(f, "{}: {}", self.path, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, " (hint: {hint})")?;
        }
        Ok(())
    }
}

/// Every error found in one configuration file, in document order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    pub fn single(err: ConfigError) -> Self {
        Self(vec![err])
    }

    pub fn iter(&self) -> impl Iterator<Item = &ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Collects errors during validation; paths are pushed and popped as the walk descends.
#[derive(Default)]
pub(crate) struct Errors {
    pub(crate) list: Vec<ConfigError>,
}

impl Errors {
    pub(crate) fn at(&mut self, path: &str, message: impl Into<String>) -> &mut ConfigError {
        self.list.push(ConfigError::new(path, message));
        let last = self.list.len() - 1;
        &mut self.list[last]
    }
}

/// "did you mean …" for a misspelt word among the known ones.
pub(crate) fn did_you_mean(word: &str, known: &[&str]) -> Option<String> {
    known
        .iter()
        .map(|k| (strsim::damerau_levenshtein(word, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let known = ["weight", "address", "state", "id"];
        assert_eq!(did_you_mean("wieght", &known).as_deref(), Some("weight"));
        assert_eq!(did_you_mean("adress", &known).as_deref(), Some("address"));
        assert_eq!(did_you_mean("zzzzzzz", &known), None);
    }

    #[test]
    fn display_names_path_location_and_hint() {
        let mut e = ConfigError::new("pools.web.retries", "must be a number").hint("write 2");
        e.location = Some((7, 5));
        assert_eq!(
            e.to_string(),
            "line 7, column 5: pools.web.retries: must be a number (hint: write 2)"
        );
    }
}
