//! The `routes` section.

use std::collections::BTreeMap;

use crate::error::{did_you_mean, Errors};
use crate::model::*;
use crate::surface::{self as s, Lenient};

use super::fields::*;

pub(super) fn routes(
    field: Option<Lenient<Vec<Lenient<s::Route>>>>,
    pools: &BTreeMap<PoolId, Pool>,
    errs: &mut Errors,
) -> Vec<Route> {
    let Some(items) = list("routes", field, errs) else {
        errs.at(
            "routes",
            "is required: without routes every request would get 404",
        )
        .hint = Some("add routes: [{ host: \"*\", path_prefix: /, pool: NAME }]".into());
        return Vec::new();
    };
    let names: Vec<&str> = pools.keys().map(|p| p.as_str()).collect();
    let mut out = Vec::new();
    for (
        p,
        s::Route {
            host,
            path_prefix,
            pool,
            unknown,
        },
    ) in items
    {
        unknown_keys(&p, &unknown, s::ROUTE_KEYS, errs);
        let hp = join(&p, "host");
        let host = match take(&hp, host, errs).as_deref() {
            None | Some("*") => Some(HostMatch::Any),
            Some(h) => {
                let h = h.to_ascii_lowercase();
                let (suffix, name) = match h.strip_prefix("*.") {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, h.clone()),
                };
                if name.is_empty()
                    || !name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'))
                {
                    errs.at(&hp, format!("`{h}` is not a host name")).hint =
                        Some("write an exact host, \"*.example.com\" or \"*\"".into());
                    None
                } else if suffix {
                    Some(HostMatch::Suffix(format!(".{name}")))
                } else {
                    Some(HostMatch::Exact(name))
                }
            }
        };
        let pp = join(&p, "path_prefix");
        let path_prefix = take(&pp, path_prefix, errs).unwrap_or_else(|| "/".into());
        if !path_prefix.starts_with('/') {
            errs.at(&pp, format!("`{path_prefix}` does not start with /"))
                .hint = Some(format!("write /{path_prefix}"));
        }
        let pl = join(&p, "pool");
        let pool = match take(&pl, pool, errs) {
            None => {
                errs.at(&pl, "is required").hint = Some(format!("name one of: {}", names.join(", ")));
                None
            }
            Some(name) if pools.contains_key(&PoolId::new(&name)) => Some(PoolId::new(&name)),
            Some(name) => {
                let e = errs.at(&pl, format!("unknown pool `{name}`"));
                e.hint = Some(match did_you_mean(&name, &names) {
                    Some(k) => format!("did you mean `{k}`?"),
                    None => format!("pools defined: {}", names.join(", ")),
                });
                None
            }
        };
        if let (Some(host), Some(pool)) = (host, pool) {
            out.push(Route {
                host,
                path_prefix,
                pool,
            });
        }
    }
    out
}
