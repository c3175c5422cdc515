//! Resolves cookie signing secrets (environment, file, inline) into a keyring. The
//! config crate does no I/O, so this is where a missing variable or unreadable file
//! becomes an error naming its key path.

use limpet_affinity::{Keyring, SigningKey};
use limpet_config::{ConfigError, CookieKey, SecretSource};

/// Builds the keyring; also returns warnings (inline secrets).
pub(crate) fn keyring(keys: &[CookieKey]) -> Result<(Option<Keyring>, Vec<String>), Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        let (path, secret) = match &k.source {
            SecretSource::Env(var) => (
                format!("cookie_keys[{i}].secret_env"),
                std::env::var_os(var)
                    .map(|v| v.into_encoded_bytes())
                    .ok_or_else(|| format!("environment variable `{var}` is not set")),
            ),
            SecretSource::File(file) => (
                format!("cookie_keys[{i}].secret_file"),
                std::fs::read(file)
                    .map(|mut b| {
                        // Files written by `echo` or editors end with a newline that is not part of the secret.
                        while b.last().is_some_and(|c| *c == b'\n' || *c == b'\r') {
                            b.pop();
                        }
                        b
                    })
                    .map_err(|e| format!("cannot read `{}`: {e}", file.display())),
            ),
            SecretSource::Inline(s) => {
                warnings.push(format!(
                    "cookie_keys[{i}] (`{}`) has its secret inline in the config file; anyone who can read the file can forge affinity cookies. Prefer secret_env or secret_file.",
                    k.id
                ));
                (format!("cookie_keys[{i}].secret"), Ok(s.as_bytes().to_vec()))
            }
        };
        match secret.and_then(|s| SigningKey::new(k.id.as_str(), &s).map_err(|e| e.to_string())) {
            Ok(key) => out.push(key),
            Err(msg) => errors.push(
                ConfigError::new(path, msg).hint("generate one with: head -c 32 /dev/urandom | base64"),
            ),
        }
    }
    if errors.is_empty() {
        Ok((Keyring::new(out), warnings))
    } else {
        Err(errors)
    }
}
