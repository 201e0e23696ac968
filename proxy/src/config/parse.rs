//! Value syntaxes of the configuration, shared by both surfaces. Each accepts what Linkerd's
//! chart renders (ranges and empty entries in port lists, a trailing dot on names, surrounding
//! whitespace) and refuses anything else with a reason.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use remora_identity::{Name, TrustAnchors};
use remora_runtime::channel::ControlAddr;

pub fn name(s: &str) -> Result<Name, String> {
    s.parse()
        .map_err(|e: remora_identity::NameError| e.to_string())
}

pub fn addr(s: &str) -> Result<SocketAddr, String> {
    s.trim()
        .parse()
        .map_err(|_| "expected an IP:port address, e.g. 127.0.0.1:4140 or [::1]:4140".to_string())
}

/// One or two listener addresses (IPv4 and IPv6) sharing one port.
pub fn addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    let addrs = s
        .split(',')
        .map(|a| addr(a.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let ports: BTreeSet<u16> = addrs.iter().map(|a| a.port()).collect();
    if ports.len() != 1 {
        return Err("all addresses of one listener must share one port".to_string());
    }
    Ok(addrs)
}

/// A control-plane address: `IP:port` or `host:port`.
pub fn control_addr(s: &str) -> Result<ControlAddr, String> {
    s.parse()
}

/// Ports and ranges (`25,587,1000-1010`); empty entries are skipped, port 0 refused.
pub fn ports(s: &str) -> Result<BTreeSet<u16>, String> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let port = |p: &str| {
            p.trim()
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| format!("{p:?} is not a port"))
        };
        match part.split_once('-') {
            None => {
                out.insert(port(part)?);
            }
            Some((lo, hi)) => {
                let (lo, hi) = (port(lo)?, port(hi)?);
                if hi < lo {
                    return Err(format!("{part:?}: the range ends before it starts"));
                }
                out.extend(lo..=hi);
            }
        }
    }
    Ok(out)
}

/// IP addresses, comma-separated.
pub fn ips(s: &str) -> Result<Vec<IpAddr>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| p.parse().map_err(|_| format!("{p:?} is not an IP address")))
        .collect()
}

/// CIDRs, comma-separated (`10.0.0.0/8,fd00::/8`).
pub fn networks(s: &str) -> Result<Vec<IpNet>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.parse::<IpNet>()
                .map(|n| n.trunc())
                .map_err(|_| format!("{p:?} is not a network (e.g. 10.0.0.0/8)"))
        })
        .collect()
}

/// DNS suffixes (`svc.cluster.local.`, `.` for every name), comma-separated, lowercased and
/// without the trailing dot.
pub fn suffixes(s: &str) -> Result<Vec<String>, String> {
    s.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            if p == "." {
                return Ok(String::new());
            }
            let p = p.strip_suffix('.').unwrap_or(p).to_ascii_lowercase();
            name(&p).map(|n| n.to_string())
        })
        .collect()
}

/// `true` or `false`, exactly.
pub fn boolean(s: &str) -> Result<bool, String> {
    match s.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err("expected true or false".to_string()),
    }
}

pub fn positive(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err("expected a whole number greater than zero".to_string()),
    }
}

pub use crate::http::record::AccessLogFormat;

pub fn access_log(s: &str) -> Result<Option<AccessLogFormat>, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "off" => Ok(None),
        "json" => Ok(Some(AccessLogFormat::Json)),
        "apache" => Ok(Some(AccessLogFormat::Apache)),
        _ => Err("expected off, json or apache".into()),
    }
}

/// Trust anchors: the PEM text itself (as Linkerd's injector gives it), or a file holding it.
pub fn trust_anchors(s: &str) -> Result<TrustAnchors, String> {
    let s = s.trim();
    if s.starts_with("-----BEGIN") {
        return TrustAnchors::from_pem(s.as_bytes());
    }
    let pem = std::fs::read(s).map_err(|e| format!("cannot read {s}: {e}"))?;
    TrustAnchors::from_pem(&pem)
}

/// A share from 0 to 1 (`0.25`).
pub fn ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err("expected a number from 0 to 1".into()),
    }
}

/// A share above 0, up to 1 (`0.5`).
pub fn share(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err("expected a number above 0, up to 1".into()),
    }
}

pub fn path(s: &str) -> Result<PathBuf, String> {
    Ok(Path::new(s.trim()).to_path_buf())
}

/// A policy workload as the control plane knows it, kept verbatim; when it looks like JSON it
/// must be an object (Linkerd's `{"ns":"shop","pod":"web-0"}`).
pub fn workload(s: &str) -> Result<String, String> {
    if s.trim_start().starts_with('{') {
        let v: serde_json::Value =
            serde_json::from_str(s).map_err(|e| format!("not valid JSON: {e}"))?;
        if !v.is_object() {
            return Err("expected a JSON object".into());
        }
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_lists_take_ranges_and_skip_empty_entries() {
        assert_eq!(
            ports("25, ,587,1000-1002,,")
                .unwrap()
                .into_iter()
                .collect::<Vec<_>>(),
            [25, 587, 1000, 1001, 1002]
        );
        assert_eq!(ports("").unwrap().len(), 0);
        assert_eq!(ports("3- 5").unwrap().len(), 3);
        for bad in ["0", "70000", "5-3", "-1", "2-", "http"] {
            assert!(ports(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn networks_suffixes_and_ips() {
        let n = networks("10.0.0.0/8, fd00::/8,").unwrap();
        assert!(n[0].contains(&"10.1.2.3".parse::<IpAddr>().unwrap()));
        assert!(networks("10.0.0.0").is_err());
        assert_eq!(
            suffixes("svc.cluster.local.,.").unwrap(),
            ["svc.cluster.local", ""]
        );
        assert!(suffixes("a b").is_err());
        assert_eq!(ips("10.42.0.7,fd00:10:42::7").unwrap().len(), 2);
        assert!(ips("10.42.0.7,x").is_err());
    }

    #[test]
    fn workloads_are_kept_verbatim_and_json_must_parse() {
        let w = "{\"ns\":\"shop\", \"pod\":\"web-abc\"}\n";
        assert_eq!(workload(w).unwrap(), w);
        assert_eq!(workload("shop:web-abc").unwrap(), "shop:web-abc");
        assert!(workload("{\"ns\":").is_err());
        assert!(workload("[1]").is_ok(), "not JSON-looking: kept");
        assert!(workload("{}").is_ok());
    }

    #[test]
    fn booleans_are_exact() {
        assert!(boolean("true").unwrap());
        assert!(!boolean(" false ").unwrap());
        for bad in ["", "1", "yes", "True"] {
            assert!(boolean(bad).is_err(), "{bad:?}");
        }
    }
}
