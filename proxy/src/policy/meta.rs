//! What a policy object is called: Linkerd's `Meta`, either a resource (`group`, `kind`,
//! `name`, e.g. `policy.linkerd.io`/`server`/`web-http`) or a default the controller made up
//! (`Default{name}`, e.g. `all-unauthenticated`, `audit`, `localhost`). Metric labels
//! (`srv_*`, `route_*`, `authz_*`) and log lines name objects by it.
//!
//! A policy arrives named in one of two ways (see `docs/policy.md`): a `meta.Metadata` message,
//! or, on older objects, a `labels` map with `group`, `kind` and `name`. Two metas are equal
//! when group, kind and name are; a resource of group `""` and kind `default` is the default of
//! that name.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use linkerd2_proxy_api::meta as pb;

/// The name of a policy object.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Meta {
    Default {
        name: Arc<str>,
    },
    Resource {
        group: Arc<str>,
        kind: Arc<str>,
        name: Arc<str>,
    },
}

impl Meta {
    pub fn default(name: &str) -> Self {
        Meta::Default {
            name: Arc::from(name),
        }
    }

    pub fn resource(group: &str, kind: &str, name: &str) -> Self {
        if group.is_empty() && kind == "default" {
            return Meta::default(name);
        }
        Meta::Resource {
            group: Arc::from(group),
            kind: Arc::from(kind),
            name: Arc::from(name),
        }
    }

    pub fn group(&self) -> &str {
        match self {
            Meta::Default { .. } => "",
            Meta::Resource { group, .. } => group,
        }
    }

    pub fn kind(&self) -> &str {
        match self {
            Meta::Default { .. } => "default",
            Meta::Resource { kind, .. } => kind,
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Meta::Default { name } | Meta::Resource { name, .. } => name,
        }
    }

    /// Linkerd's audit convention: an authorization named `Default{"audit"}` allows what it
    /// matches and logs it.
    pub fn is_audit(&self) -> bool {
        matches!(self, Meta::Default { name } if &**name == "audit")
    }

    /// From a `meta.Metadata` message; `None` when it names nothing.
    pub fn from_proto(m: &pb::Metadata) -> Option<Self> {
        match m.kind.as_ref()? {
            pb::metadata::Kind::Default(name) => Some(Meta::default(name)),
            pb::metadata::Kind::Resource(r) => Some(Meta::resource(&r.group, &r.kind, &r.name)),
        }
    }

    /// From an object's `labels`, as older controllers name them: `group` (default
    /// `default_group`), `kind`, `name` (required). Without a `kind`, a name `default:x` is the
    /// default `x`, `kind:x` is that kind's `x`, and a plain name is of `default_kind`.
    pub fn from_labels(
        labels: &HashMap<String, String>,
        default_group: &str,
        default_kind: &str,
    ) -> Result<Self, MetaError> {
        let name = labels
            .get("name")
            .filter(|n| !n.is_empty())
            .ok_or(MetaError::NoName)?;
        let group = labels.get("group").map_or(default_group, String::as_str);
        if let Some(kind) = labels.get("kind") {
            return Ok(Meta::resource(group, kind, name));
        }
        Ok(match name.split_once(':') {
            Some(("default", n)) => Meta::default(n),
            Some((kind, n)) => Meta::resource(group, kind, n),
            None => Meta::resource(group, default_kind, name),
        })
    }
}

impl fmt::Display for Meta {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Meta::Default { name } => write!(f, "default:{name}"),
            Meta::Resource { group, kind, name } if group.is_empty() => write!(f, "{kind}/{name}"),
            Meta::Resource { group, kind, name } => write!(f, "{group}/{kind}/{name}"),
        }
    }
}

/// Why a policy object's name could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MetaError {
    #[error("the object has no name")]
    NoName,
    #[error("the object has no metadata")]
    Missing,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(kv: &[(&str, &str)]) -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn metadata_and_labels_name_the_same_objects() {
        let audit = pb::Metadata {
            kind: Some(pb::metadata::Kind::Default("audit".into())),
        };
        let m = Meta::from_proto(&audit).unwrap();
        assert!(m.is_audit());
        assert_eq!((m.group(), m.kind(), m.name()), ("", "default", "audit"));
        // A resource of group "" and kind default is that default.
        let r = Meta::resource("", "default", "audit");
        assert_eq!(r, m);
        assert!(r.is_audit());
        let srv = Meta::from_labels(
            &labels(&[
                ("group", "policy.linkerd.io"),
                ("kind", "server"),
                ("name", "web"),
            ]),
            "policy.linkerd.io",
            "server",
        )
        .unwrap();
        assert_eq!(srv.to_string(), "policy.linkerd.io/server/web");
        assert_eq!(
            Meta::from_labels(
                &labels(&[("name", "default:deny")]),
                "policy.linkerd.io",
                "server"
            )
            .unwrap(),
            Meta::default("deny")
        );
        assert_eq!(
            Meta::from_labels(&labels(&[("name", "web")]), "policy.linkerd.io", "server")
                .unwrap()
                .kind(),
            "server"
        );
        assert_eq!(
            Meta::from_labels(&labels(&[]), "g", "k"),
            Err(MetaError::NoName)
        );
    }
}
