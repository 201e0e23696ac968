//! What a connection last made of a request's authority, kept for its next request.
//!
//! A keep-alive client names the same authority in request after request; the value the proxy
//! derives from it (`host:port` for routing and metrics, a `Host` header value) then costs a
//! comparison and a shared clone instead of a parse and an allocation per request. One entry
//! per connection: a connection whose requests alternate between authorities is no worse off
//! than without it (one allocation for the key per change).

use std::sync::{Mutex, PoisonError};

/// The value derived from one connection's last authority.
#[derive(Debug)]
pub struct Memo<V>(Mutex<Option<(Box<str>, V)>>);

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo(Mutex::new(None))
    }
}

impl<V: Clone> Memo<V> {
    /// The value for `key`: the kept one when `key` is the last key, else `make(key)`, kept
    /// when it is `Some`.
    pub fn get(&self, key: &str, make: impl FnOnce(&str) -> Option<V>) -> Option<V> {
        // Nothing panics while the lock is held, so a poisoned lock holds a whole entry.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, v)) = &*last
            && **k == *key
        {
            return Some(v.clone());
        }
        let v = make(key)?;
        *last = Some((key.into(), v.clone()));
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn makes_a_value_once_per_run_of_the_same_key() {
        let memo = Memo::<String>::default();
        let made = Cell::new(0);
        let make = |k: &str| {
            made.set(made.get() + 1);
            Some(format!("{k}:80"))
        };
        assert_eq!(memo.get("web", make).as_deref(), Some("web:80"));
        assert_eq!(memo.get("web", make).as_deref(), Some("web:80"));
        assert_eq!(made.get(), 1);
        assert_eq!(memo.get("api", make).as_deref(), Some("api:80"));
        assert_eq!(memo.get("web", make).as_deref(), Some("web:80"));
        assert_eq!(made.get(), 3);
    }

    #[test]
    fn a_key_without_a_value_is_not_kept() {
        let memo = Memo::<u16>::default();
        assert_eq!(memo.get("web", |_| Some(1)), Some(1));
        assert_eq!(memo.get("bad", |_| None), None);
        // The last good entry stays; the bad key is asked again.
        assert_eq!(memo.get("web", |_| Some(2)), Some(1));
        assert_eq!(memo.get("bad", |_| Some(3)), Some(3));
    }
}
