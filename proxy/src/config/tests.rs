use super::*;
use std::collections::HashMap;

fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned())
}

/// A real PEM root, as the injector puts it inline (with its trailing newline).
fn anchors_pem() -> String {
    let root = remora_identity::certs::Ca::new_root("root", Duration::from_secs(3600)).unwrap();
    format!("{}\n", root.cert_pem().trim_end())
}

/// Linkerd's rendered environment for a pod (tests/fixtures/linkerd-env/<variant>.json), with
/// the per-pod values filled in.
fn linkerd_env(variant: &str, ips: &str) -> Vec<(String, String)> {
    let path = format!(
        "{}/../tests/fixtures/linkerd-env/{variant}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let pem = anchors_pem();
    doc["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let v = kv[1]
                .as_str()
                .unwrap()
                .replace("${POD_NAME}", "web-abc")
                .replace("${POD_NS}", "shop")
                .replace("${POD_SA}", "web")
                .replace("${POD_UID}", "1b4e28ba-2fa1-11d2-883f-0016d3cca427")
                .replace("${POD_IP}", ips.split(',').next().unwrap())
                .replace("${POD_IPS}", ips)
                .replace("${POD_PORTS}", "8080")
                .replace("${NODE_NAME}", "node-a")
                .replace("${TRUST_ANCHORS_PEM}", &pem);
            (kv[0].as_str().unwrap().to_string(), v)
        })
        .collect()
}

fn with(env: &[(String, String)], set: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let mut env: Vec<(String, String)> = env.to_vec();
    for (k, v) in set {
        env.retain(|(n, _)| n != k);
        env.push((k.to_string(), v.to_string()));
    }
    Config::from_vars(env)
}

#[test]
fn defaults_match_the_documentation() {
    let c = config(&[]).unwrap();
    assert_eq!(c.outbound_addrs, vec!["127.0.0.1:4140".parse().unwrap()]);
    assert_eq!(c.inbound_addrs, vec!["0.0.0.0:4143".parse().unwrap()]);
    assert_eq!(c.admin_addr, "127.0.0.1:4191".parse().unwrap());
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    assert!(c.shutdown_endpoint);
    assert_eq!(c.idle_timeout, None);
    assert_eq!(c.log.format, remora_runtime::log::LogFormat::Plain);
    assert!(c.linkerd.is_none());
}

#[test]
fn dual_stack_lists() {
    let c = config(&[(INBOUND_ADDR, "0.0.0.0:4143, [::]:4143")]).unwrap();
    assert_eq!(c.inbound_addrs.len(), 2);
    let e = config(&[(INBOUND_ADDR, "0.0.0.0:4143,[::]:4144")]).unwrap_err();
    assert_eq!(e.var, INBOUND_ADDR);
}

#[test]
fn errors_name_the_variable() {
    let e = config(&[(OUTBOUND_ADDR, "nonsense")]).unwrap_err();
    assert_eq!(e.var, OUTBOUND_ADDR);
    assert!(
        e.to_string()
            .starts_with("REMORA_OUTBOUND_ADDR=\"nonsense\"")
    );
    for (var, bad) in [
        (SHUTDOWN_GRACE, "30"),
        (LOG_FORMAT, "xml"),
        (LOG, "info,[="),
        (CONNECT_TIMEOUT, "0s"),
        (INBOUND_MAX_CONNECTIONS, "0"),
        (OPAQUE_PORTS, "70000"),
        (INBOUND_IPS, "10.0.0.1,x"),
        (SHUTDOWN_ENDPOINT, "yes"),
        (ACCESS_LOG, "xml"),
        (INBOUND_HTTP2_SERVER, "keep_alive_interval=soon"),
        (CONTROL_STREAM_IDLE_TIMEOUT, "forever"),
    ] {
        assert_eq!(config(&[(var, bad)]).unwrap_err().var, var, "{var}={bad}");
    }
}

#[test]
fn identity_is_optional_but_complete_when_set() {
    assert!(config(&[]).unwrap().identity.is_none());
    let name = "web.shop.serviceaccount.identity.linkerd.east.example";
    let e = config(&[(IDENTITY_NAME, name)]).unwrap_err();
    assert_eq!(e.var, IDENTITY_TRUST_ANCHORS);
    let e = config(&[(IDENTITY_NAME, "not a name")]).unwrap_err();
    assert_eq!(e.var, IDENTITY_NAME);
    let e = config(&[
        (IDENTITY_NAME, name),
        (IDENTITY_TRUST_ANCHORS, "/nonexistent.pem"),
    ])
    .unwrap_err();
    assert_eq!(e.var, IDENTITY_TRUST_ANCHORS);
}

#[test]
fn trust_anchors_may_be_the_pem_itself() {
    let pem = anchors_pem();
    let c = config(&[
        (
            IDENTITY_NAME,
            "web.shop.serviceaccount.identity.linkerd.east.example",
        ),
        (IDENTITY_TRUST_ANCHORS, &pem),
        (IDENTITY_TOKEN_FILE, "/tmp/token"),
        (IDENTITY_ADDR, "127.0.0.1:8080"),
    ])
    .unwrap();
    assert_eq!(c.identity.unwrap().trust_anchors.certs().len(), 1);
}

#[test]
fn control_planes_may_be_dns_names() {
    let pem = anchors_pem();
    let c = config(&[
        (
            IDENTITY_NAME,
            "web.shop.serviceaccount.identity.linkerd.east.example",
        ),
        (IDENTITY_TRUST_ANCHORS, &pem),
        (IDENTITY_TOKEN_FILE, "/tmp/token"),
        (IDENTITY_ADDR, "identity.linkerd.svc.cluster.local.:8080"),
        (
            IDENTITY_SVC_NAME,
            "identity.linkerd.serviceaccount.identity.linkerd.east.example",
        ),
        (DESTINATION_ADDR, "dst.linkerd.svc.cluster.local.:8086"),
        (
            DESTINATION_SVC_NAME,
            "dst.linkerd.serviceaccount.identity.linkerd.east.example",
        ),
    ])
    .unwrap();
    let d = c.destination.unwrap();
    assert_eq!(d.addr.to_string(), "dst.linkerd.svc.cluster.local.:8086");
    // A name is not loopback: its identity is required.
    let e = config(&[(DESTINATION_ADDR, "dst.linkerd.svc.cluster.local.:8086")]).unwrap_err();
    assert_eq!(e.var, DESTINATION_SVC_NAME);
}

#[test]
fn policies() {
    let c = config(&[(
        INBOUND_PORT_POLICIES,
        "8080=deny; 7000=allow(*.east.example)",
    )])
    .unwrap();
    assert_eq!(c.port_policies.len(), 2);
    assert_eq!(c.default_policy, Policy::AllUnauthenticated);
    assert_eq!(
        config(&[(INBOUND_DEFAULT_POLICY, "open")]).unwrap_err().var,
        INBOUND_DEFAULT_POLICY
    );
    assert_eq!(
        config(&[(INBOUND_PORT_POLICIES, "x=deny")])
            .unwrap_err()
            .var,
        INBOUND_PORT_POLICIES
    );
    let c = config(&[(INBOUND_PORTS_REQUIRE_IDENTITY, "8080,9000-9001")]).unwrap();
    assert_eq!(c.port_policies.get(&9001), Some(&Policy::AllAuthenticated));
}

#[test]
fn durations_take_days_a_bare_zero_and_whitespace() {
    let c = config(&[(INBOUND_DETECT_TIMEOUT, " 365d "), (TCP_IDLE_TIMEOUT, "0")]).unwrap();
    assert_eq!(c.detect_timeout, Duration::from_secs(365 * 86_400));
    assert_eq!(c.idle_timeout, None);
}

#[test]
fn linkerds_rendered_environment_is_a_complete_configuration() {
    let c = Config::from_vars(linkerd_env("ipv4", "10.42.0.7")).unwrap();
    let id = c.identity.as_ref().unwrap();
    assert_eq!(
        id.name.as_str(),
        "web.shop.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(
        id.addr.to_string(),
        "linkerd-identity-headless.linkerd.svc.cluster.local.:8080"
    );
    assert_eq!(
        id.svc_name.as_ref().unwrap().as_str(),
        "linkerd-identity.linkerd.serviceaccount.identity.linkerd.cluster.local"
    );
    assert_eq!(
        id.dir.as_deref(),
        Some(std::path::Path::new("/var/run/linkerd/identity/end-entity"))
    );
    assert_eq!(id.trust_anchors.certs().len(), 1);
    let d = c.destination.as_ref().unwrap();
    assert_eq!(
        d.addr.to_string(),
        "linkerd-dst-headless.linkerd.svc.cluster.local.:8086"
    );
    assert_eq!(
        d.context, "{\"ns\":\"shop\", \"nodeName\":\"node-a\", \"pod\":\"web-abc\"}\n",
        "verbatim"
    );
    assert_eq!(d.profile_suffixes, ["svc.cluster.local"]);
    assert_eq!(d.profile_networks.len(), 5);
    assert_eq!(d.idle_timeout, Duration::from_secs(5));
    let p = c.policy.as_ref().unwrap();
    assert_eq!(
        p.workload, "{\"ns\":\"shop\", \"pod\":\"web-abc\"}\n",
        "verbatim"
    );
    assert_eq!(c.cluster_networks.len(), 5);
    assert_eq!(c.inbound_ips, ["10.42.0.7".parse::<IpAddr>().unwrap()]);
    assert_eq!(c.inbound_ports.iter().copied().collect::<Vec<_>>(), [8080]);
    assert_eq!(c.admin_addr, "0.0.0.0:4191".parse().unwrap());
    assert_eq!(c.outbound_addrs, ["127.0.0.1:4140".parse().unwrap()]);
    assert_eq!(c.inbound_connect_timeout, Duration::from_millis(100));
    assert_eq!(c.connect_timeout, Duration::from_secs(1));
    assert_eq!(
        c.detect_timeout,
        Duration::from_secs(10),
        "linkerd2-proxy's default"
    );
    assert!(c.opaque_ports.contains(&3306));
    assert_eq!(
        c.sockets.inbound_accept.keepalive,
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        c.sockets.outbound_connect.user_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        c.inbound_http.h2.keep_alive_interval,
        Some(Duration::from_secs(10))
    );
    assert_eq!(
        c.outbound_http.h2.keep_alive_timeout,
        Some(Duration::from_secs(3))
    );
    assert_eq!(c.control_streams.initial, Some(Duration::from_secs(3)));
    assert_eq!(c.control_streams.lifetime, Some(Duration::from_secs(3600)));
    assert!(!c.shutdown_endpoint);
    assert_eq!(
        c.shutdown_grace,
        Duration::from_secs(120),
        "linkerd2-proxy's default"
    );
    assert_eq!(c.worker_threads, 1);
    assert!(c.log.filter.contains("remora=info"), "{}", c.log.filter);
    let notes = c.linkerd.as_ref().unwrap();
    assert!(notes.unknown.is_empty(), "{:?}", notes.unknown);
    // The start-up log names where each value came from.
    let described = c.describe().join("\n");
    assert!(
        described.contains(
            "REMORA_INBOUND_ADDR (from \"0.0.0.0:4143\", LINKERD2_PROXY_INBOUND_LISTEN_ADDR)"
        ),
        "{described}"
    );
    assert!(described.contains("<1 PEM certificates>"), "{described}");
    assert!(!described.contains("BEGIN CERTIFICATE"));
}

#[test]
fn the_dual_stack_environment_listens_on_both_families() {
    let c = Config::from_vars(linkerd_env("dual-stack", "10.42.0.7,fd00:10:42::7")).unwrap();
    assert_eq!(
        c.outbound_addrs,
        [
            "127.0.0.1:4140".parse().unwrap(),
            "[::1]:4140".parse().unwrap()
        ]
    );
    assert_eq!(c.inbound_addrs, ["[::]:4143".parse().unwrap()]);
    assert_eq!(c.admin_addr, "[::]:4191".parse().unwrap());
    assert_eq!(c.inbound_ips.len(), 2);
}

#[test]
fn an_explicit_remora_variable_wins_and_says_so() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    let c = with(&env, &[(INBOUND_CONNECT_TIMEOUT, "2s")]).unwrap();
    assert_eq!(c.inbound_connect_timeout, Duration::from_secs(2));
    assert!(c.describe().iter().any(
        |l| l == "REMORA_INBOUND_CONNECT_TIMEOUT (from \"2s\", REMORA_INBOUND_CONNECT_TIMEOUT)"
    ));
}

#[test]
fn empty_linkerd_values_mean_unset() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    let c = with(
        &env,
        &[
            ("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", ""),
            ("LINKERD2_PROXY_CONTROL_STREAM_IDLE_TIMEOUT", ""),
            ("LINKERD2_PROXY_CONTROL_STREAM_LIFETIME", ""),
            ("LINKERD2_PROXY_INBOUND_PORTS", ""),
        ],
    )
    .unwrap();
    assert_eq!(c.control_streams, StreamLimits::default());
    assert!(c.inbound_ports.is_empty());
}

#[test]
fn bad_linkerd_values_name_the_linkerd_variable() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    for (var, bad) in [
        ("LINKERD2_PROXY_INBOUND_CONNECT_TIMEOUT", "100"),
        ("LINKERD2_PROXY_INBOUND_PORTS", "70000"),
        ("LINKERD2_PROXY_INBOUND_LISTEN_ADDR", "nonsense"),
        ("LINKERD2_PROXY_SHUTDOWN_ENDPOINT_ENABLED", "yes"),
        ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0"),
        ("LINKERD2_PROXY_IDENTITY_LOCAL_NAME", "not a name"),
        ("LINKERD2_PROXY_POLICY_WORKLOAD", "{\"ns\":"),
        (
            "LINKERD2_PROXY_IDENTITY_TRUST_ANCHORS",
            "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n",
        ),
        ("LINKERD2_PROXY_DESTINATION_SVC_ADDR", "dst:http"),
        ("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "open"),
        ("LINKERD2_PROXY_CORES_MAX_RATIO", "2"),
        (
            "LINKERD2_PROXY_OUTBOUND_LISTEN_ADDRS",
            "127.0.0.1:1,127.0.0.2:1,127.0.0.3:1",
        ),
        ("LINKERD2_PROXY_CONTROL_LISTEN_ADDR", "x"),
        ("LINKERD2_PROXY_INBOUND_SERVER_HTTP2_MAX_FRAME_SIZE", "big"),
        (
            "LINKERD2_PROXY_INBOUND_GATEWAY_SUFFIXES",
            "svc.cluster.local.",
        ),
        ("LINKERD2_PROXY_IDENTITY_DISABLED", "true"),
        ("LINKERD2_PROXY_CONTROL_STREAM_INITIAL_TIMEOUT", "2h"),
    ] {
        let e = with(&env, &[(var, bad)]).unwrap_err();
        assert_eq!(e.var, var, "{var}={bad:?}: {e}");
    }
}

#[test]
fn linkerds_surface_requires_identity_discovery_and_policy() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    for (drop, named) in [
        (
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
            "LINKERD2_PROXY_IDENTITY_LOCAL_NAME",
        ),
        (
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
            "LINKERD2_PROXY_DESTINATION_SVC_ADDR",
        ),
        (
            "LINKERD2_PROXY_POLICY_SVC_ADDR",
            "LINKERD2_PROXY_POLICY_SVC_ADDR",
        ),
    ] {
        let env: Vec<_> = env.iter().filter(|(k, _)| k != drop).cloned().collect();
        let e = Config::from_vars(env).unwrap_err();
        assert_eq!(e.var, named, "{e}");
    }
    let e = with(
        &env,
        &[
            (
                "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY",
                "cluster-authenticated",
            ),
            ("LINKERD2_PROXY_POLICY_CLUSTER_NETWORKS", ""),
        ],
    )
    .unwrap_err();
    assert_eq!(e.var, "LINKERD2_PROXY_INBOUND_DEFAULT_POLICY");
    let c = with(&env, &[("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", "audit")]).unwrap();
    assert_eq!(c.default_policy, Policy::Audit);
}

#[test]
fn every_default_policy_linkerd_accepts_parses() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    for p in [
        "all-unauthenticated",
        "all-authenticated",
        "cluster-unauthenticated",
        "cluster-authenticated",
        "audit",
        "deny",
    ] {
        with(&env, &[("LINKERD2_PROXY_INBOUND_DEFAULT_POLICY", p)])
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
}

#[test]
fn server_id_and_name_must_agree() {
    let env: Vec<_> = linkerd_env("ipv4", "10.42.0.7")
        .into_iter()
        .filter(|(k, _)| k != "LINKERD2_PROXY_IDENTITY_LOCAL_NAME")
        .collect();
    let id = "web.shop.serviceaccount.identity.linkerd.cluster.local";
    let c = with(
        &env,
        &[
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", id),
            ("LINKERD2_PROXY_IDENTITY_SERVER_NAME", id),
        ],
    )
    .unwrap();
    assert_eq!(c.identity.unwrap().name.as_str(), id);
    let e = with(
        &env,
        &[
            ("LINKERD2_PROXY_IDENTITY_SERVER_ID", id),
            (
                "LINKERD2_PROXY_IDENTITY_SERVER_NAME",
                "other.shop.serviceaccount.identity.linkerd.cluster.local",
            ),
        ],
    )
    .unwrap_err();
    assert_eq!(e.var, "LINKERD2_PROXY_IDENTITY_SERVER_ID");
}

#[test]
fn unknown_linkerd_variables_are_noted_not_fatal() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    let c = with(
        &env,
        &[
            ("LINKERD2_PROXY_FUTURE_KNOB", "1"),
            (
                "LINKERD2_PROXY_TAP_SVC_NAME",
                "tap.linkerd-viz.serviceaccount.identity.linkerd.cluster.local",
            ),
        ],
    )
    .unwrap();
    let notes = c.linkerd.unwrap();
    assert_eq!(notes.unknown, ["LINKERD2_PROXY_FUTURE_KNOB"]);
    assert!(notes.unhonoured.is_empty(), "{:?}", notes.unhonoured);
    let c = with(
        &env,
        &[("LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS", "true")],
    )
    .unwrap();
    let notes = c.linkerd.unwrap();
    assert!(
        notes
            .unhonoured
            .iter()
            .any(|(n, _)| n == "LINKERD2_PROXY_OUTBOUND_METRICS_HOSTNAME_LABELS"),
        "a value Remora does not act on is warned about"
    );
}

#[test]
fn ingress_mode_is_honoured() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    assert!(
        with(&env, &[("LINKERD2_PROXY_INGRESS_MODE", "true")])
            .unwrap()
            .ingress
    );
    assert!(!Config::from_vars(env).unwrap().ingress);
}

#[test]
fn config_md_documents_every_variable() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../CONFIG.md"))
        .expect("CONFIG.md at the workspace root");
    // One row per REMORA_* variable, its default in backticks (`unset` when it has none).
    for var in VARS {
        let start = format!("| `{}` | ", var.name);
        let Some(row) = doc.lines().find(|l| l.starts_with(&start)) else {
            panic!("CONFIG.md does not document {}", var.name);
        };
        let default = match var.default {
            "" => "unset".to_string(),
            d => format!("`{d}`"),
        };
        assert!(
            row[start.len()..].starts_with(&format!("{default} |")),
            "CONFIG.md does not give {}'s default {default}",
            var.name
        );
    }
    // The Linkerd table: one row per LINKERD_VARS entry, in its order, the last column saying
    // how Remora honours the variable (`yes`, `partly: why`, `no: why`, `inert: why`,
    // `refused (exit 64): why`).
    let rows: Vec<&str> = doc
        .lines()
        .skip_while(|l| !l.starts_with("| Linkerd variable | Meaning |"))
        .skip(2) // the header and its |---| line
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert_eq!(
        rows.len(),
        linkerd::LINKERD_VARS.len(),
        "CONFIG.md's Linkerd table needs one row per LINKERD_VARS entry"
    );
    for (row, v) in rows.iter().zip(linkerd::LINKERD_VARS) {
        let cells: Vec<&str> = row
            .trim()
            .trim_matches('|')
            .split('|')
            .map(str::trim)
            .collect();
        let name = format!("`LINKERD2_PROXY_{}`", v.name);
        assert_eq!(
            cells[0], name,
            "the Linkerd table's rows follow LINKERD_VARS"
        );
        assert_eq!(cells.len(), 5, "{name}: five columns");
        let honoured = cells[4];
        let (word, why) = match v.honoured {
            linkerd::Honoured::Yes => ("yes", ""),
            linkerd::Honoured::Partly(why) => ("partly", why),
            linkerd::Honoured::No(why) => ("no", why),
            linkerd::Honoured::Inert(why) => ("inert", why),
            linkerd::Honoured::Refused(why) => ("refused", why),
        };
        let first = honoured.split(|c: char| !c.is_ascii_alphabetic()).next();
        assert_eq!(
            first,
            Some(word),
            "{name}: the honoured column reads {honoured:?}"
        );
        assert!(
            honoured.contains(why),
            "{name}: the honoured column lacks {why:?}"
        );
    }
}

#[test]
fn tracing_is_off_without_a_collector_and_checked_with_one() {
    assert!(config(&[]).unwrap().trace.is_none());
    let t = config(&[
        (TRACE_COLLECTOR_ADDR, "127.0.0.1:4317"),
        (TRACE_SERVICE_NAME, "web-proxy"),
        (TRACE_EXTRA_ATTRIBUTES, "zone=\"a\"\nrack=r1"),
        (TRACE_SAMPLE_RATIO, "0.25"),
    ])
    .unwrap()
    .trace
    .unwrap();
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!(t.queue, 1024);
    assert!(t.svc_name.is_none());
    assert_eq!(t.resource["service.name"], "web-proxy");
    assert_eq!(t.resource["zone"], "a");
    assert_eq!(t.resource["rack"], "r1");
    // Off loopback the collector's identity is required, and with it the proxy's own.
    let e = config(&[(TRACE_COLLECTOR_ADDR, "10.0.0.9:4317")]).unwrap_err();
    assert_eq!(e.var, TRACE_COLLECTOR_SVC_NAME);
    for (var, bad) in [
        (TRACE_SAMPLE_RATIO, "2"),
        (TRACE_SAMPLE_RATIO, "x"),
        (TRACE_QUEUE, "0"),
        (TRACE_PROTOCOL, "opencensus"),
    ] {
        let e = config(&[(TRACE_COLLECTOR_ADDR, "127.0.0.1:4317"), (var, bad)]).unwrap_err();
        assert_eq!(e.var, var, "{bad}");
    }
}

#[test]
fn linkerds_trace_variables_configure_the_exporter() {
    let env = linkerd_env("ipv4", "10.42.0.7");
    let c = with(
        &env,
        &[
            (
                "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR",
                "collector.linkerd-jaeger:55678",
            ),
            (
                "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME",
                "collector.linkerd-jaeger.serviceaccount.identity.linkerd.cluster.local",
            ),
            ("LINKERD2_PROXY_TRACE_SERVICE_NAME", "linkerd-proxy"),
            (
                "LINKERD2_PROXY_TRACE_EXTRA_ATTRIBUTES",
                "k8s.pod.uid=\"u1\"",
            ),
            ("LINKERD2_PROXY_TRACE_PROTOCOL", "opencensus"),
            ("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.uid=u2,team=shop"),
            ("HOSTNAME", "web-abc"),
        ],
    )
    .unwrap();
    let t = c.trace.unwrap();
    assert_eq!(
        t.svc_name.unwrap().as_str(),
        "collector.linkerd-jaeger.serviceaccount.identity.linkerd.cluster.local"
    );
    assert!(matches!(t.addr, ControlAddr::Name { .. }));
    assert_eq!(t.resource["service.name"], "linkerd-proxy");
    assert_eq!(
        t.resource["k8s.pod.uid"], "u2",
        "OTEL_RESOURCE_ATTRIBUTES wins"
    );
    assert_eq!(t.resource["team"], "shop");
    assert_eq!(t.resource["host.name"], "web-abc");
    // TRACE_PROTOCOL is read by neither proxy: no warning, no effect.
    let notes = c.linkerd.unwrap();
    assert!(!notes.unhonoured.iter().any(|(v, _)| v.contains("TRACE")));
    // A collector off loopback without its identity is refused, naming Linkerd's variable.
    let e = with(
        &env,
        &[(
            "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_ADDR",
            "collector.linkerd-jaeger:55678",
        )],
    )
    .unwrap_err();
    assert_eq!(e.var, "LINKERD2_PROXY_TRACE_COLLECTOR_SVC_NAME");
}
