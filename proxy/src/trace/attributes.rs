//! The trace resource's attributes, read as linkerd2-proxy reads them
//! (`linkerd/app/src/env/trace.rs` in its tree): `key=value` lines, a value's surrounding
//! double quotes trimmed (the Kubernetes downward API writes labels as `key="value"`), lines
//! without `=` skipped. Sources, later ones winning: the service name, the attributes file (the
//! pod's labels), the extra attributes, then `OTEL_RESOURCE_ATTRIBUTES`.

use std::collections::BTreeMap;

/// Attributes from `key=value` lines. `OTEL_RESOURCE_ATTRIBUTES` is comma-separated by
/// OpenTelemetry's specification: `commas` splits on commas too.
pub fn parse(text: &str, commas: bool) -> BTreeMap<String, String> {
    let split = |c: char| c == '\n' || (commas && c == ',');
    text.split(split)
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            let (k, v) = line.split_once('=')?;
            Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
        })
        .collect()
}

/// Reads the attributes file; a file that cannot be read adds nothing (with a warning), as in
/// linkerd2-proxy: the pod's labels are a nicety, not a reason to refuse to start.
pub fn read_file(path: &str) -> BTreeMap<String, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, false),
        Err(e) => {
            tracing::warn!(path, error = %e, "cannot read the trace attributes file");
            BTreeMap::new()
        }
    }
}

/// The resource's attributes from every source, later sources winning.
pub fn resource(
    service_name: Option<&str>,
    file: Option<&str>,
    extra: Option<&str>,
    otel: Option<&str>,
    hostname: Option<&str>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(h) = hostname.filter(|h| !h.is_empty()) {
        out.insert("host.name".to_string(), h.to_string());
    }
    if let Some(name) = service_name.filter(|n| !n.is_empty()) {
        out.insert("service.name".to_string(), name.to_string());
    }
    if let Some(path) = file {
        out.extend(read_file(path));
    }
    if let Some(extra) = extra {
        out.extend(parse(extra, false));
    }
    if let Some(otel) = otel {
        out.extend(parse(otel, true));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_as_linkerd_reads_them() {
        let text =
            "cluster=\"c1\"\nzone=us-east\nworkload=\nkind=\"\"\nkey1=\"=\"\nkey2==v2\nkey3\n";
        let a = parse(text, false);
        assert_eq!(a["cluster"], "c1");
        assert_eq!(a["zone"], "us-east");
        assert_eq!(a["workload"], "");
        assert_eq!(a["kind"], "");
        assert_eq!(a["key1"], "=");
        assert_eq!(a["key2"], "=v2");
        assert!(!a.contains_key("key3"));
    }

    #[test]
    fn later_sources_win() {
        let dir = std::env::temp_dir().join(format!("remora-trace-attrs-{}", std::process::id()));
        std::fs::write(&dir, "app=\"web\"\nservice.name=\"from-file\"\n").unwrap();
        let path = dir.display().to_string();
        let r = resource(
            Some("linkerd-proxy"),
            Some(&path),
            Some("k8s.pod.ip=\"10.0.0.1\""),
            Some("app=otel,deployment.environment=prod"),
            Some("web-0"),
        );
        let _ = std::fs::remove_file(&dir);
        assert_eq!(r["service.name"], "from-file");
        assert_eq!(r["app"], "otel");
        assert_eq!(r["k8s.pod.ip"], "10.0.0.1");
        assert_eq!(r["deployment.environment"], "prod");
        assert_eq!(r["host.name"], "web-0");
        let missing = resource(None, Some("/nonexistent/labels"), None, None, None);
        assert!(missing.is_empty());
    }
}
