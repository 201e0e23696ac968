//! Route and backend filters validated into the API's shape: header modifiers, redirects and
//! failure injection, each only where the API carries it (a server's routes have no response
//! header modifier; gRPC routes neither redirect nor modify responses).

use linkerd2_proxy_api::grpc_route as grpc;
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::http_types;

use super::matches::{header_name, header_value};
use super::model::bad;
use super::raw::{RawFailureInjector, RawFilter, RawHeaderModifier};
use super::routes::{Filter, Kind, Side, host_match};
use crate::error::Invalid;

fn headers(at: &str, list: &[super::raw::RawHeader]) -> Result<http_types::Headers, Invalid> {
    let mut headers = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let name = header_name(&format!("{at}[{i}].name"), &h.name)?;
        header_value(&format!("{at}[{i}].value"), &h.value)?;
        headers.push(http_types::headers::Header {
            name,
            value: h.value.as_bytes().to_vec(),
        });
    }
    Ok(http_types::Headers { headers })
}

/// A header modifier's add, set and remove lists.
fn modifier(
    at: &str,
    m: &RawHeaderModifier,
) -> Result<(http_types::Headers, http_types::Headers, Vec<String>), Invalid> {
    if m.set.is_empty() && m.add.is_empty() && m.remove.is_empty() {
        return Err(bad(at, "changes nothing (set, add or remove)"));
    }
    let mut remove = Vec::new();
    for (i, r) in m.remove.iter().enumerate() {
        remove.push(header_name(&format!("{at}.remove[{i}]"), r)?);
    }
    Ok((
        headers(&format!("{at}.add"), &m.add)?,
        headers(&format!("{at}.set"), &m.set)?,
        remove,
    ))
}

pub(super) fn filters(
    at: &str,
    list: &[RawFilter],
    kind: Kind,
    side: Side,
) -> Result<Vec<Filter>, Invalid> {
    let mut out = Vec::new();
    for (i, f) in list.iter().enumerate() {
        out.push(filter(&format!("{at}[{i}]"), f, kind, side)?);
    }
    Ok(out)
}

fn filter(at: &str, f: &RawFilter, kind: Kind, side: Side) -> Result<Filter, Invalid> {
    let given = [
        ("RequestHeaderModifier", f.request_header_modifier.is_some()),
        (
            "ResponseHeaderModifier",
            f.response_header_modifier.is_some(),
        ),
        ("RequestRedirect", f.request_redirect.is_some()),
        ("FailureInjector", f.failure_injector.is_some()),
    ];
    let allowed: &[&str] = match (kind, side) {
        (Kind::Http, Side::Outbound) => &[
            "RequestHeaderModifier",
            "ResponseHeaderModifier",
            "RequestRedirect",
            "FailureInjector",
        ],
        (Kind::Http, Side::Inbound) => &[
            "RequestHeaderModifier",
            "RequestRedirect",
            "FailureInjector",
        ],
        (Kind::Grpc, _) => &["RequestHeaderModifier", "FailureInjector"],
    };
    if !allowed.contains(&f.kind.as_str()) {
        return Err(bad(
            &format!("{at}.type"),
            format!("{:?} is not one of {} here", f.kind, allowed.join(", ")),
        ));
    }
    if let Some((other, _)) = given.iter().find(|(k, set)| *set && *k != f.kind) {
        return Err(bad(
            at,
            format!("a {} filter takes no {other} settings", f.kind),
        ));
    }
    let field = |name: &str| format!("{at}.{name}");
    let missing = |name: &str| bad(at, format!("a {} filter needs {name}", f.kind));
    Ok(match f.kind.as_str() {
        "RequestHeaderModifier" => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("request_header_modifier"))?;
            let (add, set, remove) = modifier(&field("request_header_modifier"), m)?;
            Filter::RequestHeaders(http_pb::RequestHeaderModifier {
                add: Some(add),
                set: Some(set),
                remove,
            })
        }
        "ResponseHeaderModifier" => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("response_header_modifier"))?;
            let (add, set, remove) = modifier(&field("response_header_modifier"), m)?;
            Filter::ResponseHeaders(http_pb::ResponseHeaderModifier {
                add: Some(add),
                set: Some(set),
                remove,
            })
        }
        "RequestRedirect" => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("request_redirect"))?;
            Filter::Redirect(redirect(&field("request_redirect"), r)?)
        }
        _ => failure_injector(
            &field("failure_injector"),
            &f.failure_injector.clone().unwrap_or_default(),
            kind,
        )?,
    })
}

/// A failure injector: an HTTP route's by status (default 500), a gRPC route's by code
/// (default 13, `INTERNAL`); every request unless a ratio says otherwise.
fn failure_injector(fi_at: &str, fi: &RawFailureInjector, kind: Kind) -> Result<Filter, Invalid> {
    let ratio = match &fi.ratio {
        None => http_pb::Ratio {
            numerator: 1,
            denominator: 1,
        },
        Some(r) if r.denominator == 0 || r.numerator > r.denominator => {
            return Err(bad(
                &format!("{fi_at}.ratio"),
                "needs 0 <= numerator <= denominator and denominator > 0",
            ));
        }
        Some(r) => http_pb::Ratio {
            numerator: r.numerator,
            denominator: r.denominator,
        },
    };
    let message = fi.message.clone().unwrap_or_default();
    Ok(match kind {
        Kind::Http => {
            if fi.code.is_some() {
                return Err(bad(
                    &format!("{fi_at}.code"),
                    "an HTTP route's failures take a status",
                ));
            }
            let status = fi.status.unwrap_or(500);
            if !(100..=599).contains(&status) {
                return Err(bad(
                    &format!("{fi_at}.status"),
                    format!("{status} is not an HTTP status"),
                ));
            }
            Filter::HttpFailure(http_pb::HttpFailureInjector {
                status: u32::from(status),
                message,
                ratio: Some(ratio),
            })
        }
        Kind::Grpc => {
            if fi.status.is_some() {
                return Err(bad(
                    &format!("{fi_at}.status"),
                    "a gRPC route's failures take a code",
                ));
            }
            let code = fi.code.unwrap_or(13);
            if !(1..=16).contains(&code) {
                return Err(bad(
                    &format!("{fi_at}.code"),
                    format!("{code} is not a gRPC error code (1-16)"),
                ));
            }
            Filter::GrpcFailure(grpc::GrpcFailureInjector {
                code,
                message,
                ratio: Some(ratio),
            })
        }
    })
}

fn redirect(at: &str, r: &super::raw::RawRedirect) -> Result<http_pb::RequestRedirect, Invalid> {
    use http_pb::path_modifier::Replace;
    let scheme = match r.scheme.as_deref() {
        None => None,
        Some(s @ ("http" | "https")) => Some(http_types::Scheme::from(s)),
        Some(other) => {
            return Err(bad(
                &format!("{at}.scheme"),
                format!("{other:?} is not http or https"),
            ));
        }
    };
    if let Some(h) = &r.hostname
        && (h.starts_with("*.") || host_match(&format!("{at}.hostname"), h).is_err())
    {
        return Err(bad(
            &format!("{at}.hostname"),
            format!("{h:?} is not a hostname"),
        ));
    }
    let path = match &r.path {
        None => None,
        Some(p) => {
            let p_at = format!("{at}.path");
            let replace = match (
                p.kind.as_str(),
                &p.replace_full_path,
                &p.replace_prefix_match,
            ) {
                ("ReplaceFullPath", Some(v), None) => Replace::Full(v.clone()),
                ("ReplacePrefixMatch", None, Some(v)) => Replace::Prefix(v.clone()),
                ("ReplaceFullPath" | "ReplacePrefixMatch", _, _) => {
                    return Err(bad(
                        &p_at,
                        format!(
                            "{} takes exactly its own field (replace_full_path or replace_prefix_match)",
                            p.kind
                        ),
                    ));
                }
                (other, _, _) => {
                    return Err(bad(
                        &format!("{p_at}.type"),
                        format!("{other:?} is not ReplaceFullPath or ReplacePrefixMatch"),
                    ));
                }
            };
            let (Replace::Full(v) | Replace::Prefix(v)) = &replace;
            if !v.starts_with('/') {
                return Err(bad(&p_at, format!("{v:?} must start with /")));
            }
            Some(http_pb::PathModifier {
                replace: Some(replace),
            })
        }
    };
    let status = r.status_code.unwrap_or(302);
    if ![301, 302, 303, 307, 308].contains(&status) {
        return Err(bad(
            &format!("{at}.status_code"),
            format!("{status} is not a redirect status (301, 302, 303, 307, 308)"),
        ));
    }
    if r.port == Some(0) {
        return Err(bad(&format!("{at}.port"), "port 0"));
    }
    Ok(http_pb::RequestRedirect {
        scheme,
        host: r.hostname.clone().unwrap_or_default(),
        path,
        port: u32::from(r.port.unwrap_or(0)),
        status: u32::from(status),
    })
}
