//! Authorizations and rate limits validated: targets resolved (a server, a server's route, or
//! the namespace), client networks and identities parsed (`*.suffix` into labels, service
//! accounts into identities), rates checked.

use super::model::{
    Authn, Authorization, AuthzTarget, Context, Model, Network, RateLimit, bad, check_label,
    check_meta, cidr,
};
use super::raw::{
    RawAuthorization, RawClient, RawMeshTls, RawRateLimit, RawServiceAccount, RawTargetRef,
};
use super::routes::Parent;
use crate::error::Invalid;
use remora_identity::Name;

pub(super) fn authz_at(a: &RawAuthorization) -> String {
    format!("policy.authorizations[{}/{}]", a.namespace, a.name)
}

fn target(
    at: &str,
    t: &RawTargetRef,
    namespace: &str,
) -> Result<(String, Option<String>), Invalid> {
    let group_ok = match (t.kind.as_str(), t.group.as_deref()) {
        (_, None) => true,
        ("Server", Some(g)) => g == "policy.linkerd.io",
        ("HTTPRoute" | "GRPCRoute", Some(g)) => {
            g == "gateway.networking.k8s.io" || g == "policy.linkerd.io"
        }
        ("Namespace", Some(g)) => g.is_empty() || g == "core",
        _ => true,
    };
    if !group_ok {
        return Err(bad(
            &format!("{at}.group"),
            format!(
                "{:?} is not the group of a {}",
                t.group.as_deref().unwrap_or(""),
                t.kind
            ),
        ));
    }
    if t.kind == "Namespace" {
        if let Some(n) = &t.name
            && n != namespace
        {
            return Err(bad(
                &format!("{at}.name"),
                format!("a policy in {namespace} can target only its own namespace, not {n}"),
            ));
        }
        return Ok((t.kind.clone(), None));
    }
    let Some(name) = &t.name else {
        return Err(bad(
            &format!("{at}.name"),
            format!("a {} target needs a name", t.kind),
        ));
    };
    Ok((t.kind.clone(), Some(name.clone())))
}

pub(super) fn validate_authorization(
    a: &RawAuthorization,
    model: &Model,
    cx: &Context<'_>,
) -> Result<Authorization, Invalid> {
    let at = authz_at(a);
    check_meta(&at, &a.name, &a.namespace)?;
    let t_at = format!("{at}.target_ref");
    let (kind, name) = target(&t_at, &a.target_ref, &a.namespace)?;
    let name = name.unwrap_or_default();
    let server_parent = |parents: &[Parent]| parents.iter().any(|p| matches!(p, Parent::Server(_)));
    let missing = |what: &str| {
        bad(
            &format!("{t_at}.name"),
            format!("no {what} {name} in namespace {}", a.namespace),
        )
    };
    let target = match kind.as_str() {
        "Server" => {
            model
                .server(&a.namespace, &name)
                .ok_or_else(|| missing("server"))?;
            AuthzTarget::Server(name)
        }
        "HTTPRoute" => {
            model
                .http_routes
                .iter()
                .find(|r| r.namespace == a.namespace && r.name == name && server_parent(&r.parents))
                .ok_or_else(|| missing("HTTP route of a server"))?;
            AuthzTarget::HttpRoute(name)
        }
        "GRPCRoute" => {
            model
                .grpc_routes
                .iter()
                .find(|r| r.namespace == a.namespace && r.name == name && server_parent(&r.parents))
                .ok_or_else(|| missing("gRPC route of a server"))?;
            AuthzTarget::GrpcRoute(name)
        }
        "Namespace" => AuthzTarget::Namespace,
        other => {
            return Err(bad(
                &format!("{t_at}.kind"),
                format!("{other:?} is not Server, HTTPRoute, GRPCRoute or Namespace"),
            ));
        }
    };
    let (networks, authn) = client(&format!("{at}.client"), &a.client, &a.namespace, cx)?;
    Ok(Authorization {
        name: a.name.clone(),
        namespace: a.namespace.clone(),
        target,
        networks,
        authn,
        audit: a.audit,
    })
}

fn client(
    at: &str,
    c: &RawClient,
    namespace: &str,
    cx: &Context<'_>,
) -> Result<(Vec<Network>, Authn), Invalid> {
    let mut networks = Vec::new();
    if let Some(list) = &c.networks {
        if list.is_empty() {
            return Err(bad(
                &format!("{at}.networks"),
                "lists no network (leave it out for the cluster's networks)",
            ));
        }
        for (i, n) in list.iter().enumerate() {
            let n_at = format!("{at}.networks[{i}]");
            let net = cidr(&format!("{n_at}.cidr"), &n.cidr)?;
            let mut except = Vec::new();
            for (j, e) in n.except.iter().enumerate() {
                let e_at = format!("{n_at}.except[{j}]");
                let x = cidr(&e_at, e)?;
                if !net.contains(&x) {
                    return Err(bad(&e_at, format!("{x} is not inside {net}")));
                }
                except.push(x);
            }
            networks.push(Network { net, except });
        }
    }
    let authn = match (c.unauthenticated, &c.mesh_tls) {
        (true, None) => Authn::Unauthenticated,
        (false, Some(m)) => mesh_tls(&format!("{at}.mesh_tls"), m, namespace, cx)?,
        _ => {
            return Err(bad(
                at,
                "needs exactly one of unauthenticated = true and mesh_tls",
            ));
        }
    };
    Ok((networks, authn))
}

fn mesh_tls(at: &str, m: &RawMeshTls, namespace: &str, cx: &Context<'_>) -> Result<Authn, Invalid> {
    let named = !m.identities.is_empty() || !m.service_accounts.is_empty();
    match (m.unauthenticated_tls, named) {
        (true, false) => return Ok(Authn::TlsUnauthenticated),
        (true, true) => {
            return Err(bad(
                at,
                "unauthenticated_tls admits any mesh client; it takes no identities or \
                 service_accounts",
            ));
        }
        (false, false) => {
            return Err(bad(
                at,
                "authorizes no client: give identities, service_accounts or \
                 unauthenticated_tls = true",
            ));
        }
        (false, true) => {}
    }
    let mut identities = Vec::new();
    let mut suffixes = Vec::new();
    for (i, id) in m.identities.iter().enumerate() {
        let id_at = format!("{at}.identities[{i}]");
        if id == "*" {
            suffixes.push(Vec::new());
        } else if let Some(rest) = id.strip_prefix("*.") {
            check_identity(&id_at, rest)?;
            suffixes.push(rest.split('.').map(str::to_string).collect());
        } else {
            check_identity(&id_at, id)?;
            identities.push(id.clone());
        }
    }
    for (i, sa) in m.service_accounts.iter().enumerate() {
        identities.push(service_account(
            &format!("{at}.service_accounts[{i}]"),
            sa,
            namespace,
            cx,
        )?);
    }
    Ok(Authn::TlsAuthenticated {
        identities,
        suffixes,
    })
}

pub(super) fn check_identity(at: &str, v: &str) -> Result<(), Invalid> {
    v.parse::<Name>()
        .map(|_| ())
        .map_err(|e| bad(at, format!("{v:?} is not an identity: {e}")))
}

fn service_account(
    at: &str,
    sa: &RawServiceAccount,
    namespace: &str,
    cx: &Context<'_>,
) -> Result<String, Invalid> {
    check_label(&format!("{at}.name"), &sa.name)?;
    let ns = sa.namespace.as_deref().unwrap_or(namespace);
    check_label(&format!("{at}.namespace"), ns)?;
    Ok(cx.identity(&sa.name, ns))
}

pub(super) fn validate_rate_limit(
    r: &RawRateLimit,
    model: &Model,
    cx: &Context<'_>,
) -> Result<RateLimit, Invalid> {
    let at = format!("policy.rate_limits[{}/{}]", r.namespace, r.name);
    check_meta(&at, &r.name, &r.namespace)?;
    let t_at = format!("{at}.target_ref");
    let (kind, name) = target(&t_at, &r.target_ref, &r.namespace)?;
    if kind != "Server" {
        return Err(bad(
            &format!("{t_at}.kind"),
            format!("{kind:?}: a rate limit targets a Server"),
        ));
    }
    let name = name.unwrap_or_default();
    let server = model.server(&r.namespace, &name).ok_or_else(|| {
        bad(
            &format!("{t_at}.name"),
            format!("no server {name} in namespace {}", r.namespace),
        )
    })?;
    if !server.protocol.is_http() {
        return Err(bad(
            &t_at,
            format!(
                "server {name} is not HTTP (unknown, HTTP/1 or HTTP/2): it cannot be rate limited"
            ),
        ));
    }
    let rps = |at: &str, v: u32| match v {
        0 => Err(bad(at, "requests_per_second must be at least 1")),
        v => Ok(v),
    };
    let total = r
        .total
        .as_ref()
        .map(|l| rps(&format!("{at}.total"), l.requests_per_second))
        .transpose()?;
    let identity = r
        .identity
        .as_ref()
        .map(|l| rps(&format!("{at}.identity"), l.requests_per_second))
        .transpose()?;
    let mut overrides = Vec::new();
    for (i, o) in r.overrides.iter().enumerate() {
        let o_at = format!("{at}.overrides[{i}]");
        let limit = rps(&o_at, o.requests_per_second)?;
        let mut ids = Vec::new();
        for (j, c) in o.client_refs.iter().enumerate() {
            let c_at = format!("{o_at}.client_refs[{j}]");
            if let Some(k) = &c.kind
                && k != "ServiceAccount"
            {
                return Err(bad(
                    &format!("{c_at}.kind"),
                    format!("{k:?} is not ServiceAccount"),
                ));
            }
            let sa = RawServiceAccount {
                name: c.name.clone(),
                namespace: c.namespace.clone(),
            };
            ids.push(service_account(&c_at, &sa, &r.namespace, cx)?);
        }
        for (j, id) in o.identities.iter().enumerate() {
            check_identity(&format!("{o_at}.identities[{j}]"), id)?;
            ids.push(id.clone());
        }
        if ids.is_empty() {
            return Err(bad(&o_at, "names no client (client_refs or identities)"));
        }
        overrides.push((limit, ids));
    }
    if total.is_none() && identity.is_none() && overrides.is_empty() {
        return Err(bad(&at, "sets no limit (total, identity or overrides)"));
    }
    Ok(RateLimit {
        name: r.name.clone(),
        namespace: r.namespace.clone(),
        server: name,
        total,
        identity,
        overrides,
    })
}
