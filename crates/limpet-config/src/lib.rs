//! limpet's configuration: YAML text in, a validated immutable [`Config`] out, or every
//! error found with its key path, line/column and a hint. No I/O: the caller reads the
//! file and resolves secrets, so startup, `--check` and reload all run this same code.

mod duration;
mod error;
mod locate;
mod model;
mod print;
mod restart;
mod surface;
mod validate;

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use locate::Locations;
pub use model::*;
pub use print::effective_yaml;
pub use restart::{http2_restart_warnings, restart_only};

/// Parses and validates a whole configuration file.
pub fn parse(text: &str) -> Result<Config, ConfigErrors> {
    let de = serde_yaml::Deserializer::from_str(text);
    let file: surface::File = match serde_path_to_error::deserialize(de) {
        Ok(f) => f,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            let location = inner.location().map(|l| (l.line(), l.column()));
            let path = if path == "." { String::new() } else { path };
            let mut err = validate::structural(path, strip_location(&inner.to_string()));
            err.location = location;
            if err.message.contains("EOF while parsing") || text.trim().is_empty() {
                err.hint = Some("the file is empty or cut short".into());
            }
            return Err(ConfigErrors::single(err));
        }
    };
    let mut errs = error::Errors::default();
    let config = validate::validate(file, &mut errs);
    if errs.list.is_empty() {
        if let Some(config) = config {
            return Ok(config);
        }
    }
    let locations = Locations::index(text);
    let mut list = errs.list;
    for e in &mut list {
        if e.location.is_none() {
            e.location = locations.find(&e.path);
        }
    }
    list.sort_by_key(|e| e.location.unwrap_or((usize::MAX, 0)));
    Err(ConfigErrors(list))
}

/// serde_yaml appends " at line L column C"; we print the location ourselves.
fn strip_location(msg: &str) -> String {
    match msg.find(" at line ") {
        Some(i) => msg[..i].to_string(),
        None => msg.to_string(),
    }
}

#[cfg(test)]
mod tests;
