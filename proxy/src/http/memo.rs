//! What a connection last made of a request's authority, kept for its next request.
//!
//! A keep-alive client names the same authority in request after request; the value the proxy
//! derives from it (`host:port` for routing and metrics, a `Host` header value) then costs a
//! comparison and a shared clone instead of a parse and an allocation per request. One entry
//! per connection, its key inline: a connection whose requests alternate between authorities
//! is no worse off than without it.

use std::sync::{Mutex, PoisonError};

/// The longest key kept, bytes: kept inline, so a connection that sends one request (or whose
/// authority changes every request) pays no allocation for the memo. Longer keys are not kept.
pub const MAX_KEY: usize = 64;

/// The value derived from one connection's last authority.
#[derive(Debug)]
pub struct Memo<V>(Mutex<Option<(Key, V)>>);

#[derive(Debug)]
struct Key {
    len: u8,
    bytes: [u8; MAX_KEY],
}

impl Key {
    fn new(key: &str) -> Option<Key> {
        let len = key.len();
        if len > MAX_KEY {
            return None;
        }
        let mut bytes = [0; MAX_KEY];
        bytes[..len].copy_from_slice(key.as_bytes());
        Some(Key {
            len: len as u8,
            bytes,
        })
    }

    fn is(&self, key: &str) -> bool {
        &self.bytes[..usize::from(self.len)] == key.as_bytes()
    }
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Memo(Mutex::new(None))
    }
}

impl<V: Clone> Memo<V> {
    /// The value for `key`: the kept one when `key` is the last key, else `make(key)`, kept
    /// when it is `Some` (and `key` is at most [`MAX_KEY`] bytes).
    pub fn get(&self, key: &str, make: impl FnOnce(&str) -> Option<V>) -> Option<V> {
        // Nothing panics while the lock is held, so a poisoned lock holds a whole entry.
        let mut last = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((k, v)) = &*last
            && k.is(key)
        {
            return Some(v.clone());
        }
        let v = make(key)?;
        if let Some(k) = Key::new(key) {
            *last = Some((k, v.clone()));
        }
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
    fn a_key_longer_than_the_limit_is_made_every_time() {
        let memo = Memo::<usize>::default();
        let long = "a".repeat(MAX_KEY + 1);
        let made = Cell::new(0);
        let make = |k: &str| {
            made.set(made.get() + 1);
            Some(k.len())
        };
        assert_eq!(memo.get(&long, make), Some(MAX_KEY + 1));
        assert_eq!(memo.get(&long, make), Some(MAX_KEY + 1));
        assert_eq!(made.get(), 2);
        let longest = "b".repeat(MAX_KEY);
        assert_eq!(memo.get(&longest, make), Some(MAX_KEY));
        assert_eq!(memo.get(&longest, make), Some(MAX_KEY));
        assert_eq!(made.get(), 3);
        // A prefix of the kept key is another key.
        assert_eq!(memo.get(&longest[..10], make), Some(10));
        assert_eq!(made.get(), 4);
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
