//! The proxy-wide bound on label sets: every bounded store is made here, with the same
//! [`Limits`], and reports what it refused at the cap in `metrics_series_overflow_total{family}`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use crate::bounded::{Limits, Store};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FamilyLabel {
    family: &'static str,
}

/// Makes bounded stores and counts their overflows.
#[derive(Clone, Debug)]
pub struct SeriesLimits {
    limits: Limits,
    overflow: Family<FamilyLabel, Counter>,
}

impl SeriesLimits {
    pub fn register(registry: &mut Registry, limits: Limits) -> Self {
        let overflow = Family::<FamilyLabel, Counter>::default();
        registry.register(
            "metrics_series_overflow",
            "New label sets counted under the overflow label set because their family was at \
             its cap, by family",
            overflow.clone(),
        );
        SeriesLimits { limits, overflow }
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A store for `family` (`http`, `tcp`, ...).
    pub fn store<K, V>(&self, family: &'static str, make: fn() -> V) -> Store<K, V>
    where
        K: std::hash::Hash + Eq + Clone,
    {
        let counter = self.overflow.get_or_create(&FamilyLabel { family }).clone();
        Store::new(self.limits, make).with_overflow_counter(counter)
    }
}
