//! The local backend's store: ledger tables in Envoy's shared data, which every worker (every
//! Wasm VM with the same `vm_id`) of one Envoy sees. Each update is read, change, then write
//! with the compare-and-swap token of the read; a write that lost the race is redone on a
//! fresh read, so concurrent updates from different workers are never lost.
//!
//! Keys are spread over `SHARDS` shared-data entries per limit, so unrelated keys rarely
//! contend and no entry grows with the number of users beyond `ledger::MAX_ENTRIES`. Shared
//! data has no delete; a fixed set of entries whose contents are pruned keeps memory bounded.

use super::keys::fnv1a;
use super::ledger::Table;
use crate::host::{Host, SharedDataError, SharedEntry};

pub const SHARDS: u64 = 32;
/// Writes that lose the race this often in a row give up (counted as a backend failure).
pub const MAX_ATTEMPTS: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    /// Every attempt lost a compare-and-swap race.
    Contended,
    /// The host refused the read or write.
    Host,
    /// The shard holds bytes that are no ledger table (corrupted, or written by another
    /// build): never taken for an empty table, which would forget every budget in it.
    Unreadable,
}

/// The shared-data key of the shard that holds `key` of limit `limit` on route `route`.
/// Lengths are part of the name so that no two (route, limit) pairs share a prefix.
pub fn shard_name(route: &str, limit: &str, key: &str) -> String {
    shard_name_at(route, limit, fnv1a(key.as_bytes()) % SHARDS)
}

fn shard_name_at(route: &str, limit: &str, shard: u64) -> String {
    format!(
        "aigate.limits.v1.{}.{route}.{}.{limit}.{shard}",
        route.len(),
        limit.len()
    )
}

/// Creates the shards of a limit that do not exist yet. Called at configure time, before
/// traffic: creating an entry has no compare-and-swap (the host's CAS only guards an
/// existing entry), so creation under concurrent requests could lose an update.
///
/// A shard whose bytes are no ledger table is started afresh here, with a warning: requests
/// refuse it (`StoreError::Unreadable`) rather than forget its budgets, so this, at the next
/// configuration, is where it recovers.
pub fn prepare(host: &mut dyn Host, route: &str, limit: &str) {
    let empty = Table::default().encode();
    for shard in 0..SHARDS {
        let name = shard_name_at(route, limit, shard);
        let cas = match host.shared_get(&name) {
            Ok((None, _)) => None,
            Ok((Some(bytes), cas)) if Table::decode(&bytes).is_none() => {
                log::warn!("aigate: shared data {name} holds no ledger table: starting it afresh");
                cas
            }
            Ok(_) => continue,
            Err(error) => {
                log::warn!("aigate: cannot read shared data {name}: {error:?}");
                continue;
            }
        };
        if let Err(error) = host.shared_set(&name, &empty, cas) {
            log::warn!("aigate: cannot create shared data {name}: {error:?}");
        }
    }
}

/// Applies `change` to the table in `shard` atomically with respect to every other worker.
/// `change` may run several times (once per attempt); it must only depend on the table.
pub fn update<T>(
    host: &mut dyn Host,
    shard: &str,
    mut change: impl FnMut(&mut Table) -> T,
) -> Result<T, StoreError> {
    for _ in 0..MAX_ATTEMPTS {
        let (bytes, cas): SharedEntry = host.shared_get(shard).map_err(|_| StoreError::Host)?;
        // An absent shard is an empty table; one whose bytes are no table is a failure.
        let mut table = match bytes.as_deref() {
            None => Table::default(),
            Some(bytes) => Table::decode(bytes).ok_or(StoreError::Unreadable)?,
        };
        let result = change(&mut table);
        match host.shared_set(shard, &table.encode(), cas) {
            Ok(()) => return Ok(result),
            Err(SharedDataError::CasMismatch) => continue,
            Err(SharedDataError::Other) => return Err(StoreError::Host),
        }
    }
    Err(StoreError::Contended)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::host::{Callout, RecordingHost};
    use crate::limits::ledger::{Admission, Budget};

    /// A host on which another worker writes the shard between our read and our write,
    /// `interleave` times.
    struct RacingHost {
        inner: RecordingHost,
        interleave: usize,
        tokens_of_other_worker: u64,
    }

    impl RacingHost {
        fn other_worker_writes(&mut self, shard: &str) {
            let (bytes, _) = self.inner.shared_get(shard).unwrap();
            let mut table = bytes.as_deref().and_then(Table::decode).unwrap_or_default();
            table.settle("alice", BUDGET, NOW, None, self.tokens_of_other_worker);
            self.inner.shared_set(shard, &table.encode(), None).unwrap();
        }
    }

    const BUDGET: Budget = Budget {
        limit: 1_000,
        window_ms: 60_000,
    };
    const NOW: u64 = 1_700_000_000_000;

    impl Host for RacingHost {
        fn shared_get(&self, key: &str) -> Result<SharedEntry, SharedDataError> {
            self.inner.shared_get(key)
        }
        fn shared_set(
            &mut self,
            key: &str,
            value: &[u8],
            cas: Option<u32>,
        ) -> Result<(), SharedDataError> {
            if self.interleave > 0 {
                self.interleave -= 1;
                self.other_worker_writes(key);
            }
            self.inner.shared_set(key, value, cas)
        }
        fn request_headers(&self) -> Vec<(String, String)> {
            Vec::new()
        }
        fn set_request_header(&mut self, _: &str, _: Option<&str>) {}
        fn request_body(&self, _: usize) -> Option<Vec<u8>> {
            None
        }
        fn replace_request_body(&mut self, _: usize, _: &[u8]) {}
        fn response_header(&self, _: &str) -> Option<String> {
            None
        }
        fn set_response_header(&mut self, _: &str, _: Option<&str>) {}
        fn response_body(&self, _: usize, _: usize) -> Option<Vec<u8>> {
            None
        }
        fn replace_response_body(&mut self, _: usize, _: usize, _: &[u8]) {}
        fn send_response(&mut self, _: u16, _: &[(String, String)], _: &[u8]) {}
        fn resume_request(&mut self) {}
        fn resume_response(&mut self) {}
        fn dispatch(&mut self, _: &Callout) -> Result<u32, String> {
            Err("no".into())
        }
        fn property(&self, _: &[&str]) -> Option<Vec<u8>> {
            None
        }
        fn set_filter_state(&mut self, _: &str, _: &str) {}
        fn now_ms(&self) -> u64 {
            NOW
        }
        fn counter_add(&mut self, _: &str, _: u64) {}
        fn histogram_record(&mut self, _: &str, _: u64) {}
    }

    fn racing(interleave: usize) -> RacingHost {
        let mut inner = RecordingHost::new();
        prepare(&mut inner, "chat", "per-user");
        RacingHost {
            inner,
            interleave,
            tokens_of_other_worker: 7,
        }
    }

    #[test]
    fn prepare_creates_every_shard_once() {
        let mut host = RecordingHost::new();
        prepare(&mut host, "chat", "per-user");
        assert_eq!(host.shared.len(), SHARDS as usize);
        let shard = shard_name("chat", "per-user", "alice");
        update(&mut host, &shard, |table| {
            table.settle("alice", BUDGET, NOW, None, 5)
        })
        .unwrap();
        prepare(&mut host, "chat", "per-user");
        let table = Table::decode(&host.shared[&shard].0).unwrap();
        assert_eq!(
            table.entries["alice"].used, 5,
            "prepare must not reset a live shard"
        );
    }

    #[test]
    fn shard_names_separate_routes_limits_and_spread_keys() {
        assert_ne!(shard_name("a.b", "c", "k"), shard_name("a", "b.c", "k"));
        let shards: std::collections::BTreeSet<String> = (0..200)
            .map(|i| shard_name("chat", "per-user", &format!("user{i}")))
            .collect();
        assert!(shards.len() > 20, "{}", shards.len());
    }

    #[test]
    fn lost_races_are_retried_and_no_update_is_lost() {
        let mut host = racing(3);
        let shard = shard_name("chat", "per-user", "alice");
        let mut runs = 0;
        update(&mut host, &shard, |table| {
            runs += 1;
            table.settle("alice", BUDGET, NOW, None, 100);
        })
        .unwrap();
        assert_eq!(runs, 4, "three lost races, then a write");
        let table = Table::decode(&host.inner.shared[&shard].0).unwrap();
        assert_eq!(table.entries["alice"].used, 100 + 3 * 7);
    }

    #[test]
    fn retries_are_bounded() {
        let mut host = racing(usize::MAX);
        let shard = shard_name("chat", "per-user", "alice");
        let mut runs = 0;
        let result = update(&mut host, &shard, |table| {
            runs += 1;
            table.admit("alice", BUDGET, NOW, 1)
        });
        assert_eq!(result, Err(StoreError::Contended));
        assert_eq!(runs, MAX_ATTEMPTS);
    }

    #[test]
    fn admission_through_the_store() {
        let mut host = racing(1);
        let shard = shard_name("chat", "per-user", "alice");
        let admission = update(&mut host, &shard, |table| {
            table.admit("alice", BUDGET, NOW, 9)
        })
        .unwrap();
        assert!(
            matches!(admission, Admission::Allowed { used: 7, .. }),
            "{admission:?}"
        );
    }
}
