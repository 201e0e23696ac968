//! The workload a proxy names in `PortSpec.workload` and `TrafficSpec.source_workload`:
//! Linkerd's injector renders `{"ns":"shop", "pod":"web-0"}` followed by a newline (a YAML
//! block scalar). Accepted as Linkerd's policy controller accepts it: that JSON (or
//! `external_workload` in place of `pod`), or the legacy `<ns>:<pod>`.

use serde::Deserialize;

/// A pod (or external workload) and its namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
}

#[derive(Deserialize)]
struct Json {
    ns: String,
    #[serde(default)]
    pod: Option<String>,
    #[serde(default)]
    external_workload: Option<String>,
}

impl std::str::FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        let bad = || {
            format!("invalid workload {s:?}: expected {{\"ns\":\"<namespace>\",\"pod\":\"<pod>\"}}")
        };
        let (namespace, pod) = if s.trim_start().starts_with('{') {
            let j: Json = serde_json::from_str(s).map_err(|_| bad())?;
            match (j.pod, j.external_workload) {
                (Some(p), None) | (None, Some(p)) => (j.ns, p),
                _ => return Err(bad()),
            }
        } else {
            let (ns, pod) = s.trim_end().split_once(':').ok_or_else(bad)?;
            (ns.to_string(), pod.to_string())
        };
        if namespace.is_empty() || pod.is_empty() {
            return Err(bad());
        }
        Ok(Workload { namespace, pod })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linkerd_shapes_parse() {
        let want = Workload {
            namespace: "shop".into(),
            pod: "web-0".into(),
        };
        for s in [
            "{\"ns\":\"shop\", \"pod\":\"web-0\"}\n",
            "{\"ns\":\"shop\",\"pod\":\"web-0\"}",
            "{\"ns\":\"shop\",\"external_workload\":\"web-0\"}",
            "shop:web-0",
        ] {
            assert_eq!(s.parse::<Workload>().as_ref(), Ok(&want), "{s:?}");
        }
        for s in [
            "",
            "{}",
            "{\"ns\":\"shop\"}",
            "{\"ns\":\"shop\",\"pod\":\"a\",\"external_workload\":\"b\"}",
            "{\"ns\":\"\",\"pod\":\"a\"}",
            "{\"ns\":\"shop\",\"pod\":7}",
            "shop",
            ":web-0",
            "{\"ns\":\"shop\",\"pod\":\"web-0\"",
        ] {
            assert!(s.parse::<Workload>().is_err(), "{s:?} parsed");
        }
    }
}
