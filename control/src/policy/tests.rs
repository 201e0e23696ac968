//! Validation of the `[policy]` section: a config using every field compiles to the values it
//! says, and each kind of mistake is refused with the section, item and field named.

use std::path::Path;
use std::time::Duration;

use linkerd2_proxy_api::http_route::{header_match, path_match};
use linkerd2_proxy_api::inbound::proxy_protocol::Kind as In;

use super::model::{Authn, AuthzTarget, DefaultPolicy, Expression, PortRef, ServerProtocol};
use super::routes::{Filter, Parent};
use super::workload::Workload;
use crate::config::{Config, RawFile};
use crate::error::Invalid;

const HEAD: &str = r#"
[cluster]
name = "east"
trust_domain = "east.example"
[identity]
trust_anchors = "root.pem"
issuer_cert = "issuer.pem"
issuer_key = "issuer.key"
token_key = "token.key"

[[services]]
name = "web"
namespace = "shop"
cluster_ip = "10.96.0.10"
ports = [{ port = 80, target_port = 8080, name = "http" }, { port = 3306, opaque = true }, { port = 9090, name = "grpc" }]
[[services.endpoints]]
pod = "web-0"
ip = "10.213.0.5"
service_account = "web"
labels = { app = "web", version = "v1" }

[[services]]
name = "web-v2"
namespace = "shop"
ports = [{ port = 80, target_port = 8080 }]
"#;

/// Uses every field of every section.
const FULL: &str = r#"
[policy]
default_inbound_policy = "cluster-authenticated"
cluster_networks = ["10.0.0.0/8", "fd00::/8"]
probe_networks = ["10.213.0.1/32"]
detect_timeout = "5s"
allow_l5d_request_headers = true

[[policy.servers]]
name = "web-http"
namespace = "shop"
port = "http"
proxy_protocol = "HTTP/1"
access_policy = "audit"
[policy.servers.pod_selector]
match_labels = { app = "web" }
match_expressions = [{ key = "version", operator = "In", values = ["v1", "v2"] }, { key = "canary", operator = "DoesNotExist" }]
pods = ["web-0"]

[[policy.servers]]
name = "web-grpc"
namespace = "shop"
port = 9090
proxy_protocol = "gRPC"
pod_selector = {}

[[policy.authorizations]]
name = "clients"
namespace = "shop"
target_ref = { kind = "Server", name = "web-http" }
audit = true
[policy.authorizations.client]
networks = [{ cidr = "10.0.0.0/8", except = ["10.9.0.0/16"] }]
[policy.authorizations.client.mesh_tls]
identities = ["client.shop.serviceaccount.identity.linkerd.east.example", "*.prod.east.example", "*"]
service_accounts = [{ name = "batch" }, { name = "ops", namespace = "tools" }]

[[policy.authorizations]]
name = "anyone-tls"
namespace = "shop"
target_ref = { kind = "Namespace" }
client = { mesh_tls = { unauthenticated_tls = true } }

[[policy.authorizations]]
name = "health"
namespace = "shop"
target_ref = { group = "gateway.networking.k8s.io", kind = "HTTPRoute", name = "web-inbound" }
client = { unauthenticated = true }

[[policy.rate_limits]]
name = "web-limit"
namespace = "shop"
target_ref = { kind = "Server", name = "web-http" }
total = { requests_per_second = 100 }
identity = { requests_per_second = 10 }
overrides = [{ requests_per_second = 50, client_refs = [{ kind = "ServiceAccount", name = "batch" }], identities = ["x.other.example"] }]

[[policy.http_routes]]
name = "web-inbound"
namespace = "shop"
parent_refs = [{ kind = "Server", name = "web-http" }]
[[policy.http_routes.rules]]
matches = [{ path = { type = "Exact", value = "/healthz" }, method = "get" }]
filters = [{ type = "RequestHeaderModifier", request_header_modifier = { set = [{ name = "X-Checked", value = "1" }] } }]

[[policy.http_routes]]
name = "web-canary"
namespace = "shop"
parent_refs = [{ kind = "Service", name = "web", port = 80 }]
hostnames = ["web.shop.svc.cluster.local", "*.example.com"]
[[policy.http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/api" }, headers = [{ name = "x-canary", value = "1" }, { type = "RegularExpression", name = "x-user", value = "[a-z]+" }], query_params = [{ name = "debug", value = "1" }] }]
backend_refs = [{ name = "web-v2", weight = 3, filters = [{ type = "ResponseHeaderModifier", response_header_modifier = { add = [{ name = "x-backend", value = "v2" }] } }] }, { name = "web", port = 80, weight = 1 }]
timeouts = { request = "10s", response = "5s", idle = "1m" }
retry = { limit = 2, http = ["5xx", "gateway-error", "429", "500-504"], timeout = "300ms", backoff = { min = "10ms", max = "1s", jitter = 0.5 } }
[[policy.http_routes.rules]]
matches = [{ path = { type = "PathPrefix", value = "/old" } }]
filters = [{ type = "RequestRedirect", request_redirect = { scheme = "https", hostname = "new.example.com", path = { type = "ReplacePrefixMatch", replace_prefix_match = "/new" }, port = 443, status_code = 301 } }]
[[policy.http_routes.rules]]
filters = [{ type = "FailureInjector", failure_injector = { status = 503, message = "sorry", ratio = { numerator = 1, denominator = 10 } } }]

[[policy.grpc_routes]]
name = "echo"
namespace = "shop"
parent_refs = [{ kind = "Service", name = "web", port = 9090 }]
[[policy.grpc_routes.rules]]
matches = [{ method = { service = "echo.Echo", method = "Unary" }, headers = [{ name = "x-a", value = "b" }] }]
retry = { grpc = ["unavailable", "Deadline-Exceeded"] }
filters = [{ type = "FailureInjector", failure_injector = { code = 14 } }]

[[policy.grpc_routes]]
name = "echo-inbound"
namespace = "shop"
parent_refs = [{ kind = "Server", name = "web-grpc" }]
[[policy.grpc_routes.rules]]
matches = [{ method = { service = "echo.Echo" } }]
"#;

fn parse(policy: &str) -> Result<Config, Invalid> {
    Config::parse(&format!("{HEAD}\n{policy}"), Path::new("/etc/remora"))
}

fn err(policy: &str) -> String {
    match parse(policy) {
        Ok(_) => panic!("accepted:\n{policy}"),
        Err(e) => e.0,
    }
}

#[test]
fn a_config_using_every_field_compiles_as_written() {
    let c = parse(FULL).unwrap_or_else(|e| panic!("{e}"));
    let m = &c.state.policy.model;
    assert_eq!(m.default_policy, DefaultPolicy::ClusterAuthenticated);
    assert_eq!(m.cluster_networks.len(), 2);
    assert_eq!(m.detect_timeout, Duration::from_secs(5));
    assert!(m.allow_l5d_request_headers);
    let s = &m.servers[0];
    assert_eq!(s.port, PortRef::Name("http".into()));
    assert_eq!(s.protocol, ServerProtocol::Http1);
    assert_eq!(s.access_policy, DefaultPolicy::Audit);
    assert_eq!(
        s.selector.expressions[1],
        Expression::DoesNotExist("canary".into())
    );
    assert_eq!(m.servers[1].protocol, ServerProtocol::Grpc);
    let a = &m.authorizations[0];
    assert_eq!(a.target, AuthzTarget::Server("web-http".into()));
    assert!(a.audit);
    assert_eq!(a.networks[0].except[0].to_string(), "10.9.0.0/16");
    match &a.authn {
        Authn::TlsAuthenticated {
            identities,
            suffixes,
        } => {
            assert_eq!(
                identities,
                &[
                    "client.shop.serviceaccount.identity.linkerd.east.example",
                    "batch.shop.serviceaccount.identity.linkerd.east.example",
                    "ops.tools.serviceaccount.identity.linkerd.east.example",
                ]
            );
            assert_eq!(suffixes, &[vec!["prod", "east", "example"], vec![]]);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(m.authorizations[1].authn, Authn::TlsUnauthenticated);
    assert_eq!(m.authorizations[1].target, AuthzTarget::Namespace);
    assert_eq!(
        m.authorizations[2].target,
        AuthzTarget::HttpRoute("web-inbound".into())
    );
    let rl = &m.rate_limits[0];
    assert_eq!((rl.total, rl.identity), (Some(100), Some(10)));
    assert_eq!(
        rl.overrides[0].1,
        [
            "batch.shop.serviceaccount.identity.linkerd.east.example",
            "x.other.example"
        ]
    );
    let inbound = &m.http_routes[0];
    assert_eq!(inbound.parents, [Parent::Server("web-http".into())]);
    let rule = &inbound.rules[0];
    assert_eq!(rule.matches[0].method, Some(http::Method::GET.into()));
    match &rule.filters[0] {
        Filter::RequestHeaders(m) => {
            assert_eq!(m.set.as_ref().unwrap().headers[0].name, "x-checked")
        }
        other => panic!("{other:?}"),
    }
    let canary = &m.http_routes[1];
    assert_eq!(canary.hosts.len(), 2);
    let rule = &canary.rules[0];
    let matched = &rule.matches[0];
    assert_eq!(
        matched.path.as_ref().unwrap().kind,
        Some(path_match::Kind::Prefix("/api".into()))
    );
    assert_eq!(
        matched.headers[1].value,
        Some(header_match::Value::Regex("[a-z]+".into()))
    );
    assert_eq!(rule.backends[0].weight, 3);
    assert_eq!(rule.backends[0].port, None);
    assert_eq!(rule.timeouts.idle, Some(Duration::from_secs(60)));
    let retry = rule.retry.as_ref().unwrap();
    assert_eq!(retry.limit, 2);
    assert_eq!(
        retry.statuses,
        [(500, 599), (502, 504), (429, 429), (500, 504)]
    );
    assert_eq!(retry.backoff.1, Duration::from_secs(1));
    assert!(matches!(canary.rules[1].filters[0], Filter::Redirect(_)));
    assert!(matches!(canary.rules[2].filters[0], Filter::HttpFailure(_)));
    let grpc = &m.grpc_routes[0].rules[0];
    assert!(grpc.retry.as_ref().unwrap().codes.unavailable);
    assert!(grpc.retry.as_ref().unwrap().codes.deadine_exceeded);
    assert_eq!(
        grpc.retry.as_ref().unwrap().limit,
        1,
        "a retry retries once by default"
    );
    // The named port resolves against the pod's service.
    let web0 = Workload {
        namespace: "shop".into(),
        pod: "web-0".into(),
    };
    let server = c.state.policy.inbound.server(&web0, 8080);
    assert_eq!(server.labels["name"], "web-http");
    assert!(matches!(server.protocol.unwrap().kind, Some(In::Http1(_))));
}

#[test]
fn the_section_reads_back_as_written() {
    let raw = RawFile::from_toml(&format!("{HEAD}\n{FULL}")).unwrap();
    let text = raw.to_toml();
    let again = RawFile::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(again.to_toml(), text);
    let a = parse(FULL).unwrap();
    let b = Config::parse(&text, Path::new("/etc/remora")).unwrap();
    assert_eq!(a.state.policy.model.servers, b.state.policy.model.servers);
    assert_eq!(
        a.state.policy.model.http_routes,
        b.state.policy.model.http_routes
    );
    assert_eq!(
        a.state.policy.model.authorizations,
        b.state.policy.model.authorizations
    );
}

#[test]
fn no_section_means_linkerds_defaults() {
    let c = parse("").unwrap();
    let m = &c.state.policy.model;
    assert_eq!(m.default_policy, DefaultPolicy::AllUnauthenticated);
    assert_eq!(m.cluster_networks.len(), 5);
    assert_eq!(m.probe_networks.len(), 2);
    assert_eq!(m.detect_timeout, Duration::from_secs(10));
    assert!(!m.allow_l5d_request_headers);
}

/// A server for the cases below.
const SERVER: &str = r#"
[[policy.servers]]
name = "web-http"
namespace = "shop"
port = 8080
pod_selector = {}
"#;

#[test]
fn defaults_and_servers_are_checked() {
    for (policy, want) in [
        ("[policy]\ndefault_inbound_policy = \"allow\"", "policy.default_inbound_policy: \"allow\" is not"),
        ("[policy]\ncluster_networks = [\"10.0.0.0\"]", "policy.cluster_networks[0]: \"10.0.0.0\" is not a CIDR"),
        ("[policy]\nprobe_networks = [\"x\"]", "policy.probe_networks[0]"),
        (
            "[policy]\ncluster_networks = []\ndefault_inbound_policy = \"cluster-unauthenticated\"",
            "policy.cluster_networks: empty",
        ),
        ("[policy]\ndetect_timeout = \"soon\"", "policy.detect_timeout"),
        ("[policy]\ndetect_timeout = \"0s\"", "policy.detect_timeout: must not be 0"),
        ("[policy]\nbogus = 1", "unknown field `bogus`"),
        (&SERVER.replace("8080", "0"), "policy.servers[shop/web-http].port: 0 is not a port"),
        (&SERVER.replace("8080", "70000"), "policy.servers[shop/web-http].port: 70000"),
        (&SERVER.replace("8080", "\"Web_Port\""), "policy.servers[shop/web-http].port: \"Web_Port\" is not a port name"),
        (&SERVER.replace("web-http", "Web"), "policy.servers[shop/Web].name"),
        (&SERVER.replace("\"shop\"", "\"shop.x\""), "policy.servers[shop.x/web-http].namespace"),
        (&format!("{SERVER}proxy_protocol = \"HTTP/3\""), "policy.servers[shop/web-http].proxy_protocol: \"HTTP/3\""),
        (&format!("{SERVER}access_policy = \"nobody\""), "policy.servers[shop/web-http].access_policy"),
        (&format!("{SERVER}{SERVER}"), "policy.servers[shop/web-http]: defined twice"),
        (
            &SERVER.replace("pod_selector = {}", "pod_selector = { pods = [] }"),
            "policy.servers[shop/web-http].pod_selector.pods: lists no pod",
        ),
        (
            &SERVER.replace(
                "pod_selector = {}",
                "pod_selector = { match_expressions = [{ key = \"a\", operator = \"In\" }] }",
            ),
            "policy.servers[shop/web-http].pod_selector.match_expressions[0].values: In needs values",
        ),
        (
            &SERVER.replace(
                "pod_selector = {}",
                "pod_selector = { match_expressions = [{ key = \"a\", operator = \"Exists\", values = [\"x\"] }] }",
            ),
            "match_expressions[0].values: Exists takes no values",
        ),
        (
            &SERVER.replace(
                "pod_selector = {}",
                "pod_selector = { match_expressions = [{ key = \"a\", operator = \"Near\" }] }",
            ),
            "match_expressions[0].operator: \"Near\"",
        ),
        (&SERVER.replace("pod_selector = {}\n", ""), "missing field `pod_selector`"),
    ] {
        let e = err(policy);
        assert!(e.contains(want), "want {want:?} in {e:?} for:\n{policy}");
    }
}

fn authz(target: &str, client: &str) -> String {
    format!(
        "{SERVER}\n[[policy.authorizations]]\nname = \"a\"\nnamespace = \"shop\"\ntarget_ref = {target}\nclient = {client}\n"
    )
}

#[test]
fn authorizations_are_checked() {
    let server = "{ kind = \"Server\", name = \"web-http\" }";
    let anyone = "{ unauthenticated = true }";
    for (policy, want) in [
        (
            authz("{ kind = \"Server\", name = \"api\" }", anyone),
            "policy.authorizations[shop/a].target_ref.name: no server api in namespace shop",
        ),
        (
            authz("{ kind = \"Server\" }", anyone),
            "target_ref.name: a Server target needs a name",
        ),
        (
            authz("{ kind = \"Pod\", name = \"x\" }", anyone),
            "target_ref.kind: \"Pod\" is not Server",
        ),
        (
            authz("{ kind = \"HTTPRoute\", name = \"r\" }", anyone),
            "target_ref.name: no HTTP route of a server r",
        ),
        (
            authz("{ kind = \"Namespace\", name = \"other\" }", anyone),
            "target_ref.name: a policy in shop can target only its own namespace",
        ),
        (
            authz(
                "{ group = \"core\", kind = \"Server\", name = \"web-http\" }",
                anyone,
            ),
            "target_ref.group",
        ),
        (
            authz(server, "{}"),
            "policy.authorizations[shop/a].client: needs exactly one of unauthenticated = true and mesh_tls",
        ),
        (
            authz(
                server,
                "{ unauthenticated = true, mesh_tls = { unauthenticated_tls = true } }",
            ),
            "client: needs exactly one",
        ),
        (
            authz(server, "{ mesh_tls = {} }"),
            "client.mesh_tls: authorizes no client",
        ),
        (
            authz(
                server,
                "{ mesh_tls = { unauthenticated_tls = true, identities = [\"a.b\"] } }",
            ),
            "client.mesh_tls: unauthenticated_tls admits any",
        ),
        (
            authz(server, "{ mesh_tls = { identities = [\"not an id\"] } }"),
            "client.mesh_tls.identities[0]: \"not an id\" is not an identity",
        ),
        (
            authz(server, "{ mesh_tls = { identities = [\"*.\"] } }"),
            "client.mesh_tls.identities[0]",
        ),
        (
            authz(
                server,
                "{ mesh_tls = { service_accounts = [{ name = \"Bad_Name\" }] } }",
            ),
            "client.mesh_tls.service_accounts[0].name",
        ),
        (
            authz(server, "{ unauthenticated = true, networks = [] }"),
            "client.networks: lists no network",
        ),
        (
            authz(
                server,
                "{ unauthenticated = true, networks = [{ cidr = \"10.0.0.0/33\" }] }",
            ),
            "client.networks[0].cidr",
        ),
        (
            authz(
                server,
                "{ unauthenticated = true, networks = [{ cidr = \"10.0.0.0/8\", except = [\"11.0.0.0/16\"] }] }",
            ),
            "client.networks[0].except[0]: 11.0.0.0/16 is not inside 10.0.0.0/8",
        ),
        (
            format!(
                "{}{}",
                authz(server, anyone),
                authz(server, anyone).replace(SERVER, "")
            ),
            "policy.authorizations[shop/a]: defined twice",
        ),
    ] {
        let e = err(&policy);
        assert!(e.contains(want), "want {want:?} in {e:?} for:\n{policy}");
    }
}

fn limit(body: &str) -> String {
    format!(
        "{SERVER}\n[[policy.rate_limits]]\nname = \"l\"\nnamespace = \"shop\"\ntarget_ref = {{ kind = \"Server\", name = \"web-http\" }}\n{body}\n"
    )
}

#[test]
fn rate_limits_are_checked() {
    for (policy, want) in [
        (limit(""), "policy.rate_limits[shop/l]: sets no limit"),
        (
            limit("total = { requests_per_second = 0 }"),
            "policy.rate_limits[shop/l].total: requests_per_second must be at least 1",
        ),
        (
            limit("overrides = [{ requests_per_second = 5 }]"),
            "policy.rate_limits[shop/l].overrides[0]: names no client",
        ),
        (
            limit(
                "overrides = [{ requests_per_second = 5, client_refs = [{ kind = \"Group\", name = \"x\" }] }]",
            ),
            "overrides[0].client_refs[0].kind: \"Group\" is not ServiceAccount",
        ),
        (
            limit("overrides = [{ requests_per_second = 5, identities = [\"*.x\"] }]"),
            "overrides[0].identities[0]",
        ),
        (
            limit("total = { requests_per_second = 1 }")
                .replace("name = \"web-http\" }\ntotal", "name = \"nope\" }\ntotal"),
            "policy.rate_limits[shop/l].target_ref.name: no server nope",
        ),
        (
            limit("total = { requests_per_second = 1 }")
                .replace("port = 8080", "port = 8080\nproxy_protocol = \"opaque\""),
            "policy.rate_limits[shop/l].target_ref: server web-http is not HTTP",
        ),
        (
            format!(
                "{}{}",
                limit("total = { requests_per_second = 1 }"),
                limit("total = { requests_per_second = 2 }")
                    .replace(SERVER, "")
                    .replace("name = \"l\"", "name = \"m\"")
            ),
            "policy.rate_limits[shop/m].target_ref: server web-http already has a rate limit",
        ),
    ] {
        let e = err(&policy);
        assert!(e.contains(want), "want {want:?} in {e:?} for:\n{policy}");
    }
}

fn http(parent: &str, rule: &str) -> String {
    format!(
        "{SERVER}\n[[policy.http_routes]]\nname = \"r\"\nnamespace = \"shop\"\nparent_refs = [{parent}]\n[[policy.http_routes.rules]]\n{rule}\n"
    )
}

#[test]
fn http_routes_are_checked() {
    let svc = "{ kind = \"Service\", name = \"web\", port = 80 }";
    let srv = "{ kind = \"Server\", name = \"web-http\" }";
    let at = "policy.http_routes[shop/r]";
    for (policy, want) in [
        (
            http("{ kind = \"Service\", name = \"api\" }", ""),
            format!("{at}.parent_refs[0].name: no service api.shop"),
        ),
        (
            http("{ kind = \"Service\", name = \"web\", port = 81 }", ""),
            format!("{at}.parent_refs[0].port: service web.shop has no port 81"),
        ),
        (
            http("{ kind = \"Service\", name = \"web\", port = 3306 }", ""),
            format!("{at}.parent_refs[0].port: port 3306 of service web.shop is opaque"),
        ),
        (
            http(
                "{ kind = \"Service\", name = \"web\", namespace = \"x\" }",
                "",
            ),
            format!("{at}.parent_refs[0].namespace"),
        ),
        (
            http("{ kind = \"Gateway\", name = \"web\" }", ""),
            format!("{at}.parent_refs[0].kind: \"Gateway\""),
        ),
        (
            http(&format!("{svc}, {srv}"), ""),
            format!("{at}.parent_refs: mixes services and servers"),
        ),
        (
            http(srv, "").replace("port = 8080", "port = 8080\nproxy_protocol = \"gRPC\""),
            format!("{at}.parent_refs[0].name: server web-http: an HTTP route needs"),
        ),
        (
            http(svc, "").replace("[[policy.http_routes.rules]]\n", ""),
            format!("{at}.rules: at least one rule"),
        ),
        (
            http(svc, "").replace(
                "parent_refs = [{ kind = \"Service\", name = \"web\", port = 80 }]",
                "parent_refs = []",
            ),
            format!("{at}.parent_refs: names no parent"),
        ),
        (
            http(svc, "").replace("parent_refs", "hostnames = [\"Web.example\"]\nparent_refs"),
            format!("{at}.hostnames[0]"),
        ),
        (
            http(svc, "").replace("parent_refs", "hostnames = [\"10.0.0.1\"]\nparent_refs"),
            format!("{at}.hostnames[0]"),
        ),
        (
            http(svc, "matches = [{ path = { value = \"api\" } }]"),
            format!("{at}.rules[0].matches[0].path.value: \"api\" must start with /"),
        ),
        (
            http(svc, "matches = [{ path = { type = \"Glob\" } }]"),
            format!("{at}.rules[0].matches[0].path.type"),
        ),
        (
            http(
                svc,
                "matches = [{ path = { type = \"RegularExpression\", value = \"(\" } }]",
            ),
            format!("{at}.rules[0].matches[0].path.value: \"(\" is not a valid regular expression"),
        ),
        (
            http(
                svc,
                "matches = [{ headers = [{ name = \"bad header\", value = \"1\" }] }]",
            ),
            format!("{at}.rules[0].matches[0].headers[0].name"),
        ),
        (
            http(
                svc,
                "matches = [{ headers = [{ name = \"x\", value = \"a\\nb\" }] }]",
            ),
            format!("{at}.rules[0].matches[0].headers[0].value"),
        ),
        (
            http(
                svc,
                "matches = [{ headers = [{ type = \"RegularExpression\", name = \"x\", value = \"[\" }] }]",
            ),
            format!("{at}.rules[0].matches[0].headers[0].value"),
        ),
        (
            http(
                svc,
                "matches = [{ query_params = [{ name = \"\", value = \"1\" }] }]",
            ),
            format!("{at}.rules[0].matches[0].query_params[0].name"),
        ),
        (
            http(svc, "matches = [{ method = \"G E T\" }]"),
            format!("{at}.rules[0].matches[0].method"),
        ),
        (
            http(svc, "filters = [{ type = \"URLRewrite\" }]"),
            format!("{at}.rules[0].filters[0].type: \"URLRewrite\""),
        ),
        (
            http(svc, "filters = [{ type = \"RequestHeaderModifier\" }]"),
            format!(
                "{at}.rules[0].filters[0]: a RequestHeaderModifier filter needs request_header_modifier"
            ),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"RequestHeaderModifier\", request_header_modifier = {} }]",
            ),
            format!("{at}.rules[0].filters[0].request_header_modifier: changes nothing"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"RequestHeaderModifier\", request_header_modifier = { remove = [\"x\"] }, failure_injector = {} }]",
            ),
            format!(
                "{at}.rules[0].filters[0]: a RequestHeaderModifier filter takes no FailureInjector settings"
            ),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"FailureInjector\", failure_injector = { status = 700 } }]",
            ),
            format!("{at}.rules[0].filters[0].failure_injector.status"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"FailureInjector\", failure_injector = { code = 14 } }]",
            ),
            format!("{at}.rules[0].filters[0].failure_injector.code"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"FailureInjector\", failure_injector = { ratio = { numerator = 2, denominator = 1 } } }]",
            ),
            format!("{at}.rules[0].filters[0].failure_injector.ratio"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"RequestRedirect\", request_redirect = { scheme = \"ftp\" } }]",
            ),
            format!("{at}.rules[0].filters[0].request_redirect.scheme"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"RequestRedirect\", request_redirect = { status_code = 200 } }]",
            ),
            format!("{at}.rules[0].filters[0].request_redirect.status_code"),
        ),
        (
            http(
                svc,
                "filters = [{ type = \"RequestRedirect\", request_redirect = { path = { type = \"ReplaceFullPath\" } } }]",
            ),
            format!("{at}.rules[0].filters[0].request_redirect.path"),
        ),
        (
            http(
                svc,
                "matches = [{ path = { type = \"Exact\", value = \"/a\" } }]\nfilters = [{ type = \"RequestRedirect\", request_redirect = { path = { type = \"ReplacePrefixMatch\", replace_prefix_match = \"/b\" } } }]",
            ),
            format!(
                "{at}.rules[0].filters: a ReplacePrefixMatch redirect needs PathPrefix matches"
            ),
        ),
        (
            http(
                srv,
                "filters = [{ type = \"ResponseHeaderModifier\", response_header_modifier = { remove = [\"x\"] } }]",
            ),
            format!("{at}.rules[0].filters[0].type: \"ResponseHeaderModifier\" is not one of"),
        ),
        (
            http(srv, "backend_refs = [{ name = \"web\" }]"),
            format!("{at}.rules[0].backend_refs: a server's routes have no backends"),
        ),
        (
            http(srv, "timeouts = { request = \"1s\" }"),
            format!("{at}.rules[0].timeouts"),
        ),
        (
            http(svc, "backend_refs = [{ name = \"web\", kind = \"Pod\" }]"),
            format!("{at}.rules[0].backend_refs[0].kind"),
        ),
        (
            http(
                svc,
                "backend_refs = [{ name = \"a\", weight = 0 }, { name = \"b\", weight = 0 }]",
            ),
            format!("{at}.rules[0].backend_refs: every weight is 0"),
        ),
        (
            http(
                svc,
                "backend_refs = [{ name = \"a\", filters = [{ type = \"RequestRedirect\", request_redirect = {} }] }]",
            ),
            format!("{at}.rules[0].backend_refs[0].filters: a backend cannot redirect"),
        ),
        (
            http(svc, "timeouts = { request = \"0s\" }"),
            format!("{at}.rules[0].timeouts.request: must be more than 0"),
        ),
        (
            http(svc, "timeouts = { idle = \"later\" }"),
            format!("{at}.rules[0].timeouts.idle"),
        ),
        (
            http(svc, "retry = { limit = 70000 }"),
            format!("{at}.rules[0].retry.limit"),
        ),
        (
            http(svc, "retry = { http = [\"4xx\"] }"),
            format!("{at}.rules[0].retry.http[0]: \"4xx\" is not"),
        ),
        (
            http(svc, "retry = { http = [\"504-500\"] }"),
            format!("{at}.rules[0].retry.http[0]: \"504-500\" runs backwards"),
        ),
        (
            http(svc, "retry = { grpc = [\"internal\"] }"),
            format!("{at}.rules[0].retry.grpc: an HTTP route retries on http statuses"),
        ),
        (
            http(svc, "retry = { backoff = { min = \"2s\", max = \"1s\" } }"),
            format!("{at}.rules[0].retry.backoff: min is more than max"),
        ),
        (
            http(
                svc,
                "retry = { backoff = { min = \"1s\", max = \"2s\", jitter = -1.0 } }",
            ),
            format!("{at}.rules[0].retry.backoff.jitter"),
        ),
        (
            format!("{}{}", http(svc, ""), http(svc, "").replace(SERVER, "")),
            format!("{at}: defined twice"),
        ),
    ] {
        let e = err(&policy);
        assert!(e.contains(&want), "want {want:?} in {e:?} for:\n{policy}");
    }
}

fn grpc(parent: &str, rule: &str) -> String {
    format!(
        "[[policy.grpc_routes]]\nname = \"g\"\nnamespace = \"shop\"\nparent_refs = [{parent}]\n[[policy.grpc_routes.rules]]\n{rule}\n"
    )
}

#[test]
fn grpc_routes_are_checked() {
    let svc = "{ kind = \"Service\", name = \"web\", port = 9090 }";
    let at = "policy.grpc_routes[shop/g]";
    for (policy, want) in [
        (
            format!(
                "{SERVER}{}",
                grpc("{ kind = \"Server\", name = \"web-http\" }", "")
            ),
            format!("{at}.parent_refs[0].name: server web-http: a gRPC route needs a gRPC server"),
        ),
        (
            grpc(
                svc,
                "matches = [{ method = { type = \"RegularExpression\", service = \"a.*\" } }]",
            ),
            format!("{at}.rules[0].matches[0].method.type"),
        ),
        (
            grpc(svc, "matches = [{ method = { service = \"a/b\" } }]"),
            format!("{at}.rules[0].matches[0].method.service"),
        ),
        (
            grpc(svc, "retry = { http = [\"5xx\"] }"),
            format!("{at}.rules[0].retry.http: a gRPC route retries on grpc codes"),
        ),
        (
            grpc(svc, "retry = { grpc = [\"aborted\"] }"),
            format!("{at}.rules[0].retry.grpc[0]: \"aborted\" is not"),
        ),
        (
            grpc(
                svc,
                "filters = [{ type = \"RequestRedirect\", request_redirect = {} }]",
            ),
            format!("{at}.rules[0].filters[0].type: \"RequestRedirect\" is not one of"),
        ),
        (
            grpc(
                svc,
                "filters = [{ type = \"FailureInjector\", failure_injector = { code = 17 } }]",
            ),
            format!("{at}.rules[0].filters[0].failure_injector.code: 17"),
        ),
        (
            grpc(
                svc,
                "filters = [{ type = \"FailureInjector\", failure_injector = { status = 500 } }]",
            ),
            format!("{at}.rules[0].filters[0].failure_injector.status"),
        ),
    ] {
        let e = err(&policy);
        assert!(e.contains(&want), "want {want:?} in {e:?} for:\n{policy}");
    }
}

#[test]
fn services_fields_for_policy_are_checked() {
    let dup = HEAD.replace(
        "{ port = 9090, name = \"grpc\" }",
        "{ port = 9090, name = \"http\" }",
    );
    let e = Config::parse(&dup, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web.shop: ports: name http used twice"),
        "{e}"
    );
    let bad = HEAD.replace("name = \"grpc\"", "name = \"GRPC\"");
    let e = Config::parse(&bad, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web.shop: ports: name: \"GRPC\" is not a port name"),
        "{e}"
    );
    let accrual = HEAD.replace(
        "name = \"web-v2\"",
        "name = \"web-v2\"\nfailure_accrual = { kind = \"consecutive\", max_failures = 0 }",
    );
    let e = Config::parse(&accrual, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web-v2.shop: failure_accrual.max_failures"),
        "{e}"
    );
    let accrual = accrual.replace("max_failures = 0", "min_penalty = \"2m\"");
    let e = Config::parse(&accrual, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web-v2.shop: failure_accrual.max_penalty"),
        "{e}"
    );
    let accrual = accrual.replace("consecutive", "unified");
    let e = Config::parse(&accrual, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web-v2.shop: failure_accrual.kind"),
        "{e}"
    );
    // A pod's labels are one set, whichever services list it.
    let twice = format!(
        "{HEAD}\n[[services.endpoints]]\npod = \"web-0\"\nip = \"10.213.0.5\"\nlabels = {{ app = \"api\" }}\n"
    );
    let e = Config::parse(&twice, Path::new(".")).unwrap_err();
    assert!(
        e.contains("service web-v2.shop: endpoint web-0: label app is \"api\" here but \"web\""),
        "{e}"
    );
}

#[test]
fn config_md_examples_validate() {
    let doc = include_str!("../../../CONFIG.md");
    let section = &doc[doc
        .find("### Policy: ")
        .expect("CONFIG.md has the policy section")..];
    let start = section.find("```toml\n").expect("an example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("its end")];
    let c = parse(example).unwrap_or_else(|e| panic!("{e}\n{example}"));
    let m = &c.state.policy.model;
    assert_eq!(
        (
            m.servers.len(),
            m.authorizations.len(),
            m.rate_limits.len(),
            m.http_routes.len()
        ),
        (1, 1, 1, 1)
    );
}
