//! Service profiles: per-route policy (retryable, timeout, what counts as a failure), the retry
//! budget, and traffic-split overrides, as configured and as `DestinationProfile` messages.
//!
//! ```toml
//! [[services.routes]]
//! name = "items"
//! method = "GET"                 # optional
//! path = "/items(/.*)?"          # a regex matched against the whole path
//! retryable = true
//! timeout = "1s"                 # optional
//! failure_status = "500-599"     # optional, the default
//!
//! [services.retry_budget]        # optional; defaults 0.2, 10, "10s"
//! retry_ratio = 0.2
//! min_retries_per_second = 10
//! ttl = "10s"
//!
//! [[services.dst_overrides]]     # optional traffic split
//! authority = "web-west.shop.svc.cluster.local:80"
//! weight = 10
//! ```

use crate::error::Invalid;
use std::time::Duration;

use linkerd2_proxy_api::destination as pb;
use linkerd2_proxy_api::http_types::HttpMethod;
use serde::{Deserialize, Serialize};

use crate::cluster::duration;

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    pub path: String,
    #[serde(default, skip_serializing_if = "crate::cluster::is_false")]
    pub retryable: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_status: Option<String>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    #[serde(default = "default_ratio")]
    pub retry_ratio: f32,
    #[serde(default = "default_min")]
    pub min_retries_per_second: u32,
    #[serde(default = "default_ttl")]
    pub ttl: String,
}

fn default_ratio() -> f32 {
    0.2
}
fn default_min() -> u32 {
    10
}
fn default_ttl() -> String {
    "10s".into()
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawOverride {
    pub authority: String,
    pub weight: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub name: String,
    pub method: Option<http::Method>,
    pub path: String,
    pub retryable: bool,
    pub timeout: Option<Duration>,
    pub failure: (u16, u16),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub ratio: f32,
    pub min_per_second: u32,
    pub ttl: Duration,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Profile {
    pub routes: Vec<Route>,
    pub budget: Option<Budget>,
    pub overrides: Vec<(String, u32)>,
}

fn status_range(s: &str) -> Result<(u16, u16), Invalid> {
    let parse = |x: &str| {
        x.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("{s:?} is not a status or a range such as 500-599"))
    };
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => (parse(s)?, parse(s)?),
    };
    if a > b {
        return Err(Invalid::from(format!("{s:?} runs backwards")));
    }
    Ok((a, b))
}

fn duration_pb(d: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

impl Profile {
    pub fn validate(
        routes: &[RawRoute],
        budget: Option<&RawBudget>,
        overrides: &[RawOverride],
    ) -> Result<Profile, Invalid> {
        let mut out = Profile::default();
        for r in routes {
            let ctx = |e: Invalid| Invalid(format!("route {}: {e}", r.name));
            regex::Regex::new(&format!("^(?:{})$", r.path))
                .map_err(|e| ctx(Invalid(format!("path is not a valid regex: {e}"))))?;
            let method = match &r.method {
                Some(m) => Some(
                    http::Method::from_bytes(m.to_ascii_uppercase().as_bytes())
                        .map_err(|_| ctx(Invalid(format!("method {m:?} is not an HTTP method"))))?,
                ),
                None => None,
            };
            let timeout = match &r.timeout {
                Some(t) => Some(duration("timeout", t).map_err(ctx)?),
                None => None,
            };
            let failure =
                status_range(r.failure_status.as_deref().unwrap_or("500-599")).map_err(ctx)?;
            out.routes.push(Route {
                name: r.name.clone(),
                method,
                path: r.path.clone(),
                retryable: r.retryable,
                timeout,
                failure,
            });
        }
        if let Some(b) = budget {
            if !(0.0..=1000.0).contains(&b.retry_ratio) {
                return Err(Invalid::from(
                    "retry_budget.retry_ratio must be between 0 and 1000",
                ));
            }
            out.budget = Some(Budget {
                ratio: b.retry_ratio,
                min_per_second: b.min_retries_per_second,
                ttl: duration("retry_budget.ttl", &b.ttl)?,
            });
        }
        for o in overrides {
            if o.authority
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                return Err(Invalid::from(format!(
                    "dst_overrides: {:?} is not host:port",
                    o.authority
                )));
            }
            out.overrides.push((o.authority.clone(), o.weight));
        }
        Ok(out)
    }

    /// The profile as a `DestinationProfile` (without the name or endpoint, which depend on the
    /// target).
    pub fn to_proto(&self) -> pb::DestinationProfile {
        use pb::request_match::{Match, Seq};
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let mut all = vec![pb::RequestMatch {
                    r#match: Some(Match::Path(pb::PathMatch {
                        regex: r.path.clone(),
                    })),
                }];
                if let Some(m) = &r.method {
                    all.push(pb::RequestMatch {
                        r#match: Some(Match::Method(HttpMethod::from(m.clone()))),
                    });
                }
                pb::Route {
                    condition: Some(pb::RequestMatch {
                        r#match: Some(Match::All(Seq { matches: all })),
                    }),
                    response_classes: vec![pb::ResponseClass {
                        condition: Some(pb::ResponseMatch {
                            r#match: Some(pb::response_match::Match::Status(pb::HttpStatusRange {
                                min: u32::from(r.failure.0),
                                max: u32::from(r.failure.1),
                            })),
                        }),
                        is_failure: true,
                    }],
                    metrics_labels: [("route".to_string(), r.name.clone())]
                        .into_iter()
                        .collect(),
                    is_retryable: r.retryable,
                    timeout: r.timeout.map(duration_pb),
                }
            })
            .collect();
        pb::DestinationProfile {
            routes,
            retry_budget: self.budget.as_ref().map(|b| pb::RetryBudget {
                retry_ratio: b.ratio,
                min_retries_per_second: b.min_per_second,
                ttl: Some(duration_pb(b.ttl)),
            }),
            dst_overrides: self
                .overrides
                .iter()
                .map(|(authority, weight)| pb::WeightedDst {
                    authority: authority.clone(),
                    weight: *weight,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }
}
