//! Route matches validated into the API's shape: HTTP paths, headers, query parameters and
//! methods; gRPC services and methods. Regexes must compile (with the `regex` crate, as
//! linkerd2-proxy compiles them), header names and values must be valid.

use linkerd2_proxy_api::grpc_route as grpc;
use linkerd2_proxy_api::http_route as http_pb;
use linkerd2_proxy_api::http_types;

use super::model::bad;
use super::raw::{RawGrpcMatch, RawHttpMatch, RawValueMatch};
use crate::error::Invalid;

pub(super) fn regex(at: &str, re: &str) -> Result<(), Invalid> {
    regex::Regex::new(re)
        .map(|_| ())
        .map_err(|e| bad(at, format!("{re:?} is not a valid regular expression: {e}")))
}

pub(super) fn header_name(at: &str, name: &str) -> Result<String, Invalid> {
    http::HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_string())
        .map_err(|_| bad(at, format!("{name:?} is not a header name")))
}

pub(super) fn header_value(at: &str, v: &str) -> Result<(), Invalid> {
    http::HeaderValue::from_str(v)
        .map(|_| ())
        .map_err(|_| bad(at, format!("{v:?} is not a header value")))
}

pub(super) fn header_matches(
    at: &str,
    list: &[RawValueMatch],
) -> Result<Vec<http_pb::HeaderMatch>, Invalid> {
    use http_pb::header_match::Value;
    let mut out = Vec::new();
    for (i, h) in list.iter().enumerate() {
        let h_at = format!("{at}[{i}]");
        let name = header_name(&format!("{h_at}.name"), &h.name)?;
        let value = match h.kind.as_deref() {
            None | Some("Exact") => {
                header_value(&format!("{h_at}.value"), &h.value)?;
                Value::Exact(h.value.as_bytes().to_vec())
            }
            Some("RegularExpression") => {
                regex(&format!("{h_at}.value"), &h.value)?;
                Value::Regex(h.value.clone())
            }
            Some(other) => {
                return Err(bad(
                    &format!("{h_at}.type"),
                    format!("{other:?} is not Exact or RegularExpression"),
                ));
            }
        };
        out.push(http_pb::HeaderMatch {
            name,
            value: Some(value),
        });
    }
    Ok(out)
}

pub(super) fn http_match(at: &str, m: &RawHttpMatch) -> Result<http_pb::HttpRouteMatch, Invalid> {
    use http_pb::path_match::Kind as P;
    let (kind, value) = match &m.path {
        Some(p) => (p.kind.as_deref(), p.value.as_deref().unwrap_or("/")),
        None => (None, "/"),
    };
    let p_at = format!("{at}.path");
    let path = match kind {
        None | Some("PathPrefix") | Some("Exact") => {
            if !value.starts_with('/') {
                return Err(bad(
                    &format!("{p_at}.value"),
                    format!("{value:?} must start with /"),
                ));
            }
            match kind {
                Some("Exact") => P::Exact(value.to_string()),
                _ => P::Prefix(value.to_string()),
            }
        }
        Some("RegularExpression") => {
            regex(&format!("{p_at}.value"), value)?;
            P::Regex(value.to_string())
        }
        Some(other) => {
            return Err(bad(
                &format!("{p_at}.type"),
                format!("{other:?} is not Exact, PathPrefix or RegularExpression"),
            ));
        }
    };
    let mut query_params = Vec::new();
    for (i, q) in m.query_params.iter().enumerate() {
        use http_pb::query_param_match::Value;
        let q_at = format!("{at}.query_params[{i}]");
        if q.name.is_empty() {
            return Err(bad(&format!("{q_at}.name"), "empty"));
        }
        let value = match q.kind.as_deref() {
            None | Some("Exact") => Value::Exact(q.value.clone()),
            Some("RegularExpression") => {
                regex(&format!("{q_at}.value"), &q.value)?;
                Value::Regex(q.value.clone())
            }
            Some(other) => {
                return Err(bad(
                    &format!("{q_at}.type"),
                    format!("{other:?} is not Exact or RegularExpression"),
                ));
            }
        };
        query_params.push(http_pb::QueryParamMatch {
            name: q.name.clone(),
            value: Some(value),
        });
    }
    let method = match &m.method {
        Some(v) => Some(http_types::HttpMethod::from(
            http::Method::from_bytes(v.to_ascii_uppercase().as_bytes()).map_err(|_| {
                bad(
                    &format!("{at}.method"),
                    format!("{v:?} is not an HTTP method"),
                )
            })?,
        )),
        None => None,
    };
    Ok(http_pb::HttpRouteMatch {
        path: Some(http_pb::PathMatch { kind: Some(path) }),
        headers: header_matches(&format!("{at}.headers"), &m.headers)?,
        query_params,
        method,
    })
}

pub(super) fn grpc_match(at: &str, m: &RawGrpcMatch) -> Result<grpc::GrpcRouteMatch, Invalid> {
    let rpc = match &m.method {
        None => None,
        Some(method) => {
            if let Some(k) = &method.kind
                && k != "Exact"
            {
                return Err(bad(
                    &format!("{at}.method.type"),
                    format!("{k:?}: the proxy matches gRPC services and methods exactly (Exact)"),
                ));
            }
            for (v, field) in [(&method.service, "service"), (&method.method, "method")] {
                if let Some(v) = v
                    && (v.is_empty() || v.contains('/') || v.contains(char::is_whitespace))
                {
                    return Err(bad(
                        &format!("{at}.method.{field}"),
                        format!("{v:?} is not a gRPC {field} name"),
                    ));
                }
            }
            Some(grpc::GrpcRpcMatch {
                service: method.service.clone().unwrap_or_default(),
                method: method.method.clone().unwrap_or_default(),
            })
        }
    };
    Ok(grpc::GrpcRouteMatch {
        rpc,
        headers: header_matches(&format!("{at}.headers"), &m.headers)?,
    })
}
