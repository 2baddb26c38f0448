//! Token accounting for the local backend, as pure functions over a `Table` (one shard of
//! budget keys). `local.rs` keeps tables in Envoy's shared data; nothing here touches a host.
//!
//! Per key the table keeps the window it counts in, the tokens `used` in it, the largest
//! answer seen (`peak`) and the `holds` of requests in flight. Admission:
//!
//! 1. A window that has ended is rolled over: `used` starts again at 0.
//! 2. `used >= limit`: over budget (429 until the window ends).
//! 3. `used + held >= limit`: the rest of the budget is held by requests in flight (429,
//!    retry in a second).
//! 4. Otherwise the request is admitted and holds `peak` tokens (its likely cost), or, before
//!    any answer for the key was seen, all that is left (so the very first answer of a key is
//!    measured alone).
//!
//! When the answer's usage is known its hold is released and its tokens are added to `used`.
//! As long as no answer is larger than the largest seen before, the tokens admitted can pass
//! the limit by at most one answer, however many requests run at once on however many workers.
//!
//! Memory stays bounded: a hold expires after `HOLD_TTL_MS` even if its release was lost, an
//! entry with no holds is dropped once its window is over by a whole window, and a shard
//! takes at most `MAX_ENTRIES` keys.

use std::collections::BTreeMap;

use super::window::Window;

/// A hold older than this is dropped (its request ended without releasing it, for example
/// because the worker's VM failed). Longer than any sensible LLM request timeout.
pub const HOLD_TTL_MS: u64 = 15 * 60 * 1000;
/// Keys per shard; `local::SHARDS` shards per limit.
pub const MAX_ENTRIES: usize = 4096;
/// Requests in flight per key.
pub const MAX_HOLDS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hold {
    pub id: u32,
    pub amount: u64,
    pub expires_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Entry {
    pub window_start_ms: u64,
    pub used: u64,
    pub peak: u64,
    pub holds: Vec<Hold>,
}

impl Entry {
    fn roll(&mut self, window: &Window) {
        if self.window_start_ms != window.start_ms {
            self.window_start_ms = window.start_ms;
            self.used = 0;
        }
    }

    pub fn held(&self) -> u64 {
        self.holds
            .iter()
            .fold(0u64, |sum, hold| sum.saturating_add(hold.amount))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Table {
    pub entries: BTreeMap<String, Entry>,
}

/// A budget: `limit` tokens per window of `window_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub limit: u64,
    pub window_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; `used` is what the key had used in this window before this request.
    Allowed { used: u64, hold: Hold },
    /// The window's budget is used up.
    OverLimit { used: u64 },
    /// What is left of the budget is held by requests in flight.
    InFlight { used: u64 },
    /// The shard has no room for another key.
    Full,
}

impl Table {
    /// Drops expired holds, and entries that hold nothing and whose window ended a whole
    /// window ago (their `peak` is forgotten then).
    pub fn prune(&mut self, now_ms: u64, budget: Budget) {
        let stale_before = now_ms.saturating_sub(budget.window_ms.saturating_mul(2));
        self.entries.retain(|_, entry| {
            entry.holds.retain(|hold| hold.expires_ms > now_ms);
            !entry.holds.is_empty() || entry.window_start_ms > stale_before
        });
    }

    pub fn admit(&mut self, key: &str, budget: Budget, now_ms: u64, hold_id: u32) -> Admission {
        let window = Window::at(now_ms, budget.window_ms);
        self.prune(now_ms, budget);
        if !self.entries.contains_key(key) && self.entries.len() >= MAX_ENTRIES {
            return Admission::Full;
        }
        let entry = self.entries.entry(key.to_string()).or_default();
        entry.roll(&window);
        let used = entry.used;
        if used >= budget.limit {
            return Admission::OverLimit { used };
        }
        if used.saturating_add(entry.held()) >= budget.limit || entry.holds.len() >= MAX_HOLDS {
            return Admission::InFlight { used };
        }
        let amount = if entry.peak > 0 {
            entry.peak
        } else {
            budget.limit - used
        };
        let hold = Hold {
            id: hold_id,
            amount,
            expires_ms: now_ms.saturating_add(HOLD_TTL_MS),
        };
        entry.holds.push(hold);
        Admission::Allowed { used, hold }
    }

    /// Releases the request's hold and counts its tokens in the current window.
    pub fn settle(
        &mut self,
        key: &str,
        budget: Budget,
        now_ms: u64,
        hold_id: Option<u32>,
        tokens: u64,
    ) {
        let window = Window::at(now_ms, budget.window_ms);
        self.prune(now_ms, budget);
        if tokens == 0 && !self.entries.contains_key(key) {
            return;
        }
        let entry = self.entries.entry(key.to_string()).or_default();
        entry.roll(&window);
        if let Some(id) = hold_id {
            if let Some(position) = entry.holds.iter().position(|hold| hold.id == id) {
                entry.holds.swap_remove(position);
            }
        }
        entry.used = entry.used.saturating_add(tokens);
        entry.peak = entry.peak.max(tokens);
    }

    /// Gives a hold back without counting tokens (another limit of the same request refused it).
    pub fn release(&mut self, key: &str, hold_id: u32) {
        if let Some(entry) = self.entries.get_mut(key) {
            entry.holds.retain(|hold| hold.id != hold_id);
        }
    }

    // ------------------------------------------------------------ encoding
    //
    // version 1, entry count u32, then per entry: key length u16, key, window start, used,
    // peak (u64 each), hold count u16, then per hold: id u32, amount u64, expiry u64.
    // Little endian throughout.

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + self.entries.len() * 48);
        out.push(1u8);
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for (key, entry) in &self.entries {
            let key = key.as_bytes();
            let key = key
                .get(..key.len().min(u16::MAX as usize))
                .unwrap_or_default();
            out.extend_from_slice(&(key.len() as u16).to_le_bytes());
            out.extend_from_slice(key);
            out.extend_from_slice(&entry.window_start_ms.to_le_bytes());
            out.extend_from_slice(&entry.used.to_le_bytes());
            out.extend_from_slice(&entry.peak.to_le_bytes());
            let holds = entry
                .holds
                .get(..entry.holds.len().min(u16::MAX as usize))
                .unwrap_or_default();
            out.extend_from_slice(&(holds.len() as u16).to_le_bytes());
            for hold in holds {
                out.extend_from_slice(&hold.id.to_le_bytes());
                out.extend_from_slice(&hold.amount.to_le_bytes());
                out.extend_from_slice(&hold.expires_ms.to_le_bytes());
            }
        }
        out
    }

    /// None for bytes that are not a table of this version.
    pub fn decode(bytes: &[u8]) -> Option<Table> {
        if bytes.is_empty() {
            return Some(Table::default());
        }
        let mut reader = Reader { bytes, at: 0 };
        if reader.take(1)? != [1u8] {
            return None;
        }
        let count = u32::from_le_bytes(reader.array()?);
        let mut entries = BTreeMap::new();
        for _ in 0..count {
            let key_len = u16::from_le_bytes(reader.array()?) as usize;
            let key = String::from_utf8(reader.take(key_len)?.to_vec()).ok()?;
            let window_start_ms = u64::from_le_bytes(reader.array()?);
            let used = u64::from_le_bytes(reader.array()?);
            let peak = u64::from_le_bytes(reader.array()?);
            let hold_count = u16::from_le_bytes(reader.array()?);
            let mut holds = Vec::with_capacity(hold_count as usize);
            for _ in 0..hold_count {
                holds.push(Hold {
                    id: u32::from_le_bytes(reader.array()?),
                    amount: u64::from_le_bytes(reader.array()?),
                    expires_ms: u64::from_le_bytes(reader.array()?),
                });
            }
            entries.insert(
                key,
                Entry {
                    window_start_ms,
                    used,
                    peak,
                    holds,
                },
            );
        }
        (reader.at == bytes.len()).then_some(Table { entries })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let slice = self.bytes.get(self.at..end)?;
        self.at = end;
        Some(slice)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]
    use super::*;

    const BUDGET: Budget = Budget {
        limit: 100,
        window_ms: 60_000,
    };
    /// 20 s into a 60 s window.
    const T0: u64 = 1_700_000_000_000;

    fn allowed(admission: Admission) -> Hold {
        match admission {
            Admission::Allowed { hold, .. } => hold,
            other => panic!("expected Allowed, got {other:?}"),
        }
    }

    #[test]
    fn first_request_holds_the_whole_budget_until_its_answer_is_known() {
        let mut table = Table::default();
        let hold = allowed(table.admit("alice", BUDGET, T0, 1));
        assert_eq!(hold.amount, 100);
        assert_eq!(
            table.admit("alice", BUDGET, T0, 2),
            Admission::InFlight { used: 0 }
        );
        // Other keys are independent.
        allowed(table.admit("bob", BUDGET, T0, 3));
        table.settle("alice", BUDGET, T0, Some(1), 30);
        let entry = &table.entries["alice"];
        assert_eq!((entry.used, entry.peak, entry.holds.len()), (30, 30, 0));
        // Now each request holds the peak: admitted while used + held < limit
        // (30, 60, 90), then refused (120): at most one answer over.
        for id in 4..7 {
            assert_eq!(allowed(table.admit("alice", BUDGET, T0, id)).amount, 30);
        }
        assert_eq!(
            table.admit("alice", BUDGET, T0, 7),
            Admission::InFlight { used: 30 }
        );
    }

    #[test]
    fn budget_overshoots_by_at_most_one_answer() {
        // Many concurrent requests, each answer 30 tokens, settled in arbitrary order.
        let mut table = Table::default();
        let mut in_flight = Vec::new();
        let mut admitted_tokens = 0;
        for round in 0..50u32 {
            for id in 0..4u32 {
                if let Admission::Allowed { hold, .. } =
                    table.admit("k", BUDGET, T0, round * 10 + id)
                {
                    in_flight.push(hold.id);
                }
            }
            if let Some(id) = in_flight.pop() {
                table.settle("k", BUDGET, T0, Some(id), 30);
                admitted_tokens += 30;
            }
        }
        for id in in_flight.drain(..) {
            table.settle("k", BUDGET, T0, Some(id), 30);
            admitted_tokens += 30;
        }
        assert!(admitted_tokens <= BUDGET.limit + 30, "{admitted_tokens}");
        assert!(admitted_tokens >= BUDGET.limit, "{admitted_tokens}");
        assert_eq!(
            table.admit("k", BUDGET, T0, 999),
            Admission::OverLimit {
                used: admitted_tokens
            }
        );
    }

    #[test]
    fn over_limit_until_the_window_ends() {
        let mut table = Table::default();
        let hold = allowed(table.admit("k", BUDGET, T0, 1));
        table.settle("k", BUDGET, T0, Some(hold.id), 120);
        assert_eq!(
            table.admit("k", BUDGET, T0 + 1, 2),
            Admission::OverLimit { used: 120 }
        );
        let next = Window::at(T0, BUDGET.window_ms).end_ms();
        assert_eq!(
            table.admit("k", BUDGET, next - 1, 3),
            Admission::OverLimit { used: 120 }
        );
        match table.admit("k", BUDGET, next, 4) {
            Admission::Allowed { used: 0, hold } => {
                assert_eq!(hold.amount, 120, "the peak is kept")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_late_answer_counts_in_the_window_it_ends_in() {
        let mut table = Table::default();
        let hold = allowed(table.admit("k", BUDGET, T0, 1));
        let next = Window::at(T0, BUDGET.window_ms).end_ms();
        table.settle("k", BUDGET, next + 5, Some(hold.id), 40);
        let entry = &table.entries["k"];
        assert_eq!(
            (entry.window_start_ms, entry.used, entry.holds.len()),
            (next, 40, 0)
        );
    }

    #[test]
    fn release_without_tokens_frees_the_hold() {
        let mut table = Table::default();
        let hold = allowed(table.admit("k", BUDGET, T0, 7));
        table.settle("k", BUDGET, T0, Some(hold.id), 0);
        assert_eq!(table.entries["k"].holds.len(), 0);
        allowed(table.admit("k", BUDGET, T0, 8));
        table.release("k", 8);
        assert!(table.entries["k"].holds.is_empty());
        table.settle("nobody", BUDGET, T0, None, 0);
        assert!(!table.entries.contains_key("nobody"));
    }

    #[test]
    fn lost_holds_expire() {
        let mut table = Table::default();
        allowed(table.admit("k", BUDGET, T0, 1));
        assert_eq!(
            table.admit("k", BUDGET, T0 + 10, 2),
            Admission::InFlight { used: 0 }
        );
        let later = T0 + HOLD_TTL_MS + 1;
        allowed(table.admit("k", BUDGET, later, 3));
    }

    #[test]
    fn stale_entries_are_pruned_and_the_shard_is_bounded() {
        let mut table = Table::default();
        for i in 0..10u32 {
            let hold = allowed(table.admit(&format!("user{i}"), BUDGET, T0, i));
            table.settle(&format!("user{i}"), BUDGET, T0, Some(hold.id), 5);
        }
        assert_eq!(table.entries.len(), 10);
        // One window later they are still there (their peak is useful) ...
        table.prune(T0 + BUDGET.window_ms, BUDGET);
        assert_eq!(table.entries.len(), 10);
        // ... two windows later they are gone.
        table.prune(T0 + 3 * BUDGET.window_ms, BUDGET);
        assert!(table.entries.is_empty());

        let mut full = Table::default();
        for i in 0..MAX_ENTRIES {
            full.entries.insert(
                format!("k{i}"),
                Entry {
                    window_start_ms: Window::at(T0, BUDGET.window_ms).start_ms,
                    ..Entry::default()
                },
            );
        }
        assert_eq!(full.admit("newcomer", BUDGET, T0, 1), Admission::Full);
        allowed(full.admit("k1", BUDGET, T0, 2));
    }

    #[test]
    fn encoding_round_trips_and_rejects_garbage() {
        let mut table = Table::default();
        allowed(table.admit("alice", BUDGET, T0, 1));
        allowed(table.admit("bøb", BUDGET, T0, 2));
        table.settle("bøb", BUDGET, T0, Some(2), 12);
        let bytes = table.encode();
        assert_eq!(Table::decode(&bytes), Some(table.clone()));
        assert_eq!(Table::decode(b""), Some(Table::default()));
        assert_eq!(Table::decode(&bytes[..bytes.len() - 1]), None);
        let mut extra = bytes.clone();
        extra.push(0);
        assert_eq!(Table::decode(&extra), None);
        assert_eq!(Table::decode(&[2, 0, 0, 0, 0]), None);
        assert_eq!(Table::decode(&[1, 255, 255, 255, 255]), None);
    }
}
