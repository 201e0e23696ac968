//! A destination's profile, ready for the data path: the `DestinationProfile` from discovery
//! with its routes compiled (method + path regex → retryable, timeout, failure statuses) and its
//! retry budget.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use pb::request_match::Match;
use regex::Regex;

use crate::discovery::budget::{BudgetConfig, RetryBudget};

/// One route of a profile.
#[derive(Clone, Debug)]
pub struct Route {
    pub name: String,
    method: Option<http::Method>,
    path: Option<Regex>,
    pub retryable: bool,
    pub timeout: Option<Duration>,
    /// Response statuses counted as failures (5xx when the profile says nothing).
    pub failures: Vec<(u16, u16)>,
}

impl Route {
    pub fn matches(&self, method: &http::Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method)
            && self.path.as_ref().is_none_or(|r| r.is_match(path))
    }

    pub fn is_failure(&self, status: http::StatusCode) -> bool {
        let s = status.as_u16();
        self.failures.iter().any(|&(lo, hi)| (lo..=hi).contains(&s))
    }
}

/// A profile as the data path uses it.
#[derive(Debug)]
pub struct Profile {
    pub proto: pb::DestinationProfile,
    pub routes: Vec<Route>,
    pub budget: Option<BudgetConfig>,
    /// Traffic split (`dst_overrides`): backend authorities and their weights, in the listed
    /// order. A weight of 0 makes a failover backend.
    pub backends: Vec<(String, u32)>,
}

fn duration(d: &Option<prost_types::Duration>) -> Option<Duration> {
    let d = d.as_ref()?;
    if d.seconds < 0 || d.nanos < 0 {
        return None;
    }
    Some(Duration::new(d.seconds as u64, d.nanos as u32)).filter(|d| !d.is_zero())
}

/// Reads the method and path conditions of a request match (an `all` of simple matches).
fn conditions(m: &pb::RequestMatch, method: &mut Option<http::Method>, path: &mut Option<Regex>) {
    match &m.r#match {
        Some(Match::All(seq)) => seq.matches.iter().for_each(|m| conditions(m, method, path)),
        Some(Match::Path(p)) => *path = Regex::new(&format!("^(?:{})$", p.regex)).ok(),
        Some(Match::Method(hm)) => *method = http::Method::try_from(hm.clone()).ok(),
        _ => {}
    }
}

impl Profile {
    pub fn compile(proto: pb::DestinationProfile) -> Profile {
        let routes = proto
            .routes
            .iter()
            .map(|r| {
                let (mut method, mut path) = (None, None);
                if let Some(c) = &r.condition {
                    conditions(c, &mut method, &mut path);
                }
                let failures: Vec<(u16, u16)> = r
                    .response_classes
                    .iter()
                    .filter(|c| c.is_failure)
                    .filter_map(|c| match c.condition.as_ref()?.r#match.as_ref()? {
                        pb::response_match::Match::Status(s) => {
                            Some((s.min as u16, s.max.max(s.min) as u16))
                        }
                        _ => None,
                    })
                    .collect();
                Route {
                    name: r.metrics_labels.get("route").cloned().unwrap_or_default(),
                    method,
                    path,
                    retryable: r.is_retryable,
                    timeout: duration(&r.timeout),
                    failures: if failures.is_empty() {
                        vec![(500, 599)]
                    } else {
                        failures
                    },
                }
            })
            .collect();
        let budget = proto.retry_budget.as_ref().map(|b| BudgetConfig {
            ratio: b.retry_ratio,
            min_per_second: b.min_retries_per_second,
            ttl: duration(&b.ttl).unwrap_or(Duration::from_secs(10)),
        });
        let backends = proto
            .dst_overrides
            .iter()
            .filter(|d| !d.authority.is_empty())
            .map(|d| (d.authority.clone(), d.weight))
            .collect();
        Profile {
            proto,
            routes,
            budget,
            backends,
        }
    }

    /// The first route matching a request.
    pub fn route(&self, method: &http::Method, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.matches(method, path))
    }
}

/// A target's retry budget, rebuilt when the profile changes its parameters.
#[derive(Debug, Default)]
pub struct BudgetSlot {
    current: Mutex<Option<Arc<RetryBudget>>>,
}

impl BudgetSlot {
    pub fn get(&self, config: BudgetConfig) -> Arc<RetryBudget> {
        let mut cur = match self.current.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        match cur.as_ref() {
            Some(b) if b.config() == config => b.clone(),
            _ => {
                let b = Arc::new(RetryBudget::new(config));
                *cur = Some(b.clone());
                b
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compiles_routes_like_the_control_plane_sends_them() {
        use pb::request_match::Seq;
        let proto = pb::DestinationProfile {
            routes: vec![pb::Route {
                condition: Some(pb::RequestMatch {
                    r#match: Some(Match::All(Seq {
                        matches: vec![
                            pb::RequestMatch {
                                r#match: Some(Match::Path(pb::PathMatch {
                                    regex: "/items(/.*)?".into(),
                                })),
                            },
                            pb::RequestMatch {
                                r#match: Some(Match::Method(http::Method::GET.into())),
                            },
                        ],
                    })),
                }),
                is_retryable: true,
                timeout: Some(prost_types::Duration {
                    seconds: 1,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let p = Profile::compile(proto);
        let r = p.route(&http::Method::GET, "/items/3").unwrap();
        assert!(r.retryable);
        assert_eq!(r.timeout, Some(Duration::from_secs(1)));
        assert!(r.is_failure(http::StatusCode::BAD_GATEWAY));
        assert!(!r.is_failure(http::StatusCode::NOT_FOUND));
        assert!(p.route(&http::Method::POST, "/items").is_none());
        assert!(
            p.route(&http::Method::GET, "/itemsX").is_none(),
            "the regex matches the whole path"
        );
    }
}
