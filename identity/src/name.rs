//! Identity names: DNS-like names, and workload identities in Linkerd's form
//! `<serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-ns>.<trust-domain>`.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// A validated DNS-like name, stored lowercased without a trailing dot. Shared, not copied, when
/// cloned: a proxy clones its peers' names on every request (pool keys, metric labels).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(Arc<str>);

/// Why a string is not a name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("{0:?} is not a DNS name: {1}")]
    Invalid(String, &'static str),
    #[error(
        "{0:?} is not a workload identity of the form \
         <serviceaccount>.<namespace>.serviceaccount.identity.<control-plane-ns>.<trust-domain>"
    )]
    NotWorkload(String),
}

const MAX_LEN: usize = 253;
const MAX_LABEL: usize = 63;

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The name's labels, left to right.
    pub fn labels(&self) -> impl Iterator<Item = &str> {
        self.0.split('.')
    }

    /// Whether this name equals `suffix` or ends with `.suffix`.
    pub fn is_under(&self, suffix: &str) -> bool {
        let suffix = suffix.trim_end_matches('.');
        self.0.len() > suffix.len()
            && self.0.ends_with(suffix)
            && self.0.as_bytes()[self.0.len() - suffix.len() - 1] == b'.'
            || self.0.eq_ignore_ascii_case(suffix)
    }
}

impl FromStr for Name {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let bad = |why| NameError::Invalid(s.to_string(), why);
        let trimmed = s.strip_suffix('.').unwrap_or(s);
        if trimmed.is_empty() {
            return Err(bad("empty"));
        }
        if trimmed.len() > MAX_LEN {
            return Err(bad("longer than 253 characters"));
        }
        for label in trimmed.split('.') {
            if label.is_empty() {
                return Err(bad("empty label"));
            }
            if label.len() > MAX_LABEL {
                return Err(bad("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                return Err(bad("only letters, digits, '-' and '.' are allowed"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(bad("a label starts or ends with '-'"));
            }
        }
        if trimmed.parse::<std::net::Ipv4Addr>().is_ok() {
            return Err(bad("an IP address is not a name"));
        }
        Ok(Name(trimmed.to_ascii_lowercase().into()))
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The parts of a workload identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct WorkloadId {
    pub service_account: String,
    pub namespace: String,
    pub control_plane_ns: String,
    pub trust_domain: String,
}

const MIDDLE: &str = ".serviceaccount.identity.";

impl WorkloadId {
    pub fn new(
        service_account: &str,
        namespace: &str,
        control_plane_ns: &str,
        trust_domain: &str,
    ) -> Result<Self, NameError> {
        format!("{service_account}.{namespace}{MIDDLE}{control_plane_ns}.{trust_domain}").parse()
    }

    /// The identity as a name.
    pub fn name(&self) -> Name {
        Name(self.to_string().into())
    }
}

impl FromStr for WorkloadId {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        let name: Name = s.parse()?;
        name.try_into()
    }
}

impl TryFrom<Name> for WorkloadId {
    type Error = NameError;
    fn try_from(name: Name) -> Result<Self, NameError> {
        let not = || NameError::NotWorkload(name.0.to_string());
        let (left, right) = name.0.split_once(MIDDLE).ok_or_else(not)?;
        let (service_account, namespace) = left.split_once('.').ok_or_else(not)?;
        if namespace.contains('.') {
            return Err(not());
        }
        let (control_plane_ns, trust_domain) = right.split_once('.').ok_or_else(not)?;
        Ok(WorkloadId {
            service_account: service_account.to_string(),
            namespace: namespace.to_string(),
            control_plane_ns: control_plane_ns.to_string(),
            trust_domain: trust_domain.to_string(),
        })
    }
}

impl fmt::Display for WorkloadId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}{MIDDLE}{}.{}",
            self.service_account, self.namespace, self.control_plane_ns, self.trust_domain
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_linkerd_identities() {
        let id: WorkloadId = "web.shop.serviceaccount.identity.linkerd.cluster.local"
            .parse()
            .unwrap();
        assert_eq!(id.service_account, "web");
        assert_eq!(id.namespace, "shop");
        assert_eq!(id.control_plane_ns, "linkerd");
        assert_eq!(id.trust_domain, "cluster.local");
        assert_eq!(
            id.to_string(),
            "web.shop.serviceaccount.identity.linkerd.cluster.local"
        );
        let east = WorkloadId::new("api", "prod", "remora", "east.example").unwrap();
        assert_eq!(
            east.to_string(),
            "api.prod.serviceaccount.identity.remora.east.example"
        );
        assert_eq!(east.name().as_str(), east.to_string());
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            ".",
            "a..b",
            "-a.b",
            "a-.b",
            "a_b.c",
            "web.shop.serviceaccount.identity.linkerd",
            "web.serviceaccount.identity.linkerd.cluster.local",
            "a.b.c.serviceaccount.identity.linkerd.cluster.local",
            "10.0.0.1",
        ] {
            assert!(bad.parse::<WorkloadId>().is_err(), "{bad:?} accepted");
        }
        assert!("x".repeat(64).parse::<Name>().is_err());
        assert!(format!("{}.com", "a.".repeat(130)).parse::<Name>().is_err());
    }

    #[test]
    fn lowercases_and_drops_trailing_dot() {
        let n: Name = "Web.Shop.Example.".parse().unwrap();
        assert_eq!(n.as_str(), "web.shop.example");
        assert!(n.is_under("shop.example"));
        assert!(n.is_under("web.shop.example"));
        assert!(!n.is_under("hop.example"));
    }

    fn label() -> impl Strategy<Value = String> {
        "[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?"
    }

    proptest! {
        #[test]
        fn workload_roundtrip(sa in label(), ns in label(), cp in label(), td in prop::collection::vec(label(), 1..4)) {
            let td = td.join(".");
            let s = format!("{sa}.{ns}.serviceaccount.identity.{cp}.{td}");
            let id: WorkloadId = s.parse().unwrap();
            prop_assert_eq!(id.to_string(), s);
            prop_assert_eq!(&id.service_account, &sa);
            prop_assert_eq!(&id.trust_domain, &td);
        }

        #[test]
        fn never_panics_and_valid_names_are_canonical(s in "\\PC{0,80}") {
            if let Ok(n) = s.parse::<Name>() {
                prop_assert!(n.as_str().len() <= 253);
                prop_assert!(n.as_str().bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'));
                prop_assert_eq!(n.as_str().parse::<Name>().unwrap(), n.clone());
            }
            let _ = s.parse::<WorkloadId>();
        }
    }
}
