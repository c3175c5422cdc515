//! Maps key paths (`pools.web.backends[2].address`) to the line and column where they
//! are written, so that errors found after deserialisation can still point at the file.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Path → 1-based (line, column) of the key (or of the sequence item).
#[derive(Debug, Default)]
pub struct Locations {
    map: HashMap<String, (usize, usize)>,
}

impl Locations {
    /// Indexes `text`. A document the parser rejects yields an empty index: the
    /// syntax error itself is reported by serde_yaml with its own location.
    pub fn index(text: &str) -> Self {
        let mut recv = Receiver::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut recv, false).is_err() {
            return Self::default();
        }
        Self { map: recv.map }
    }

    /// Location of `path`, or of its nearest indexed ancestor.
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path;
        loop {
            if let Some(loc) = self.map.get(p) {
                return Some(*loc);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, index: usize },
}

#[derive(Default)]
struct Receiver {
    stack: Vec<Frame>,
    map: HashMap<String, (usize, usize)>,
}

impl Receiver {
    /// Path of the node about to start, or None when it is a mapping key.
    fn node_path(&mut self, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { path, key }) => key.take().map(|k| join(path, &k)),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.map.entry(p.clone()).or_insert((mark.line(), mark.col() + 1));
                Some(p)
            }
        }
    }
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

impl MarkedEventReceiver for Receiver {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            // A scalar with no path of its own is a mapping key: remember where it is written.
            Event::Scalar(value, ..) if self.node_path(mark).is_none() => {
                if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                    let p = join(path, &value);
                    self.map.insert(p, (mark.line(), mark.col() + 1));
                    *key = Some(value);
                }
            }
            Event::MappingStart(..) => {
                let path = self.node_path(mark).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.node_path(mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            Event::Alias(_) => {
                let _ = self.node_path(mark);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_items() {
        let text = "pools:\n  web:\n    backends:\n      - id: a\n        address: x\n      - { id: b, address: y }\n";
        let loc = Locations::index(text);
        assert_eq!(loc.find("pools.web"), Some((2, 3)));
        assert_eq!(loc.find("pools.web.backends[0].address"), Some((5, 9)));
        assert_eq!(loc.find("pools.web.backends[1].address").map(|l| l.0), Some(6));
        // Unknown leaf falls back to its parent item.
        assert_eq!(loc.find("pools.web.backends[0].nope").map(|l| l.0), Some(4));
    }
}
