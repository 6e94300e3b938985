//! Timers for deadlines, idle timeouts, approval windows and scheduled starts: a binary heap in
//! memory (no table scans per tick), loaded from the store at start.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Mutex;

use stint_core::{Clock, SessionId};
use time::OffsetDateTime;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(OffsetDateTime, SessionId)>>,
    /// The one wake time that counts per session; heap entries that disagree are stale.
    due: HashMap<SessionId, OffsetDateTime>,
}

/// The timer set. Invariant: every session in `due` has a heap entry no later than its due time.
#[derive(Debug, Default)]
pub struct Scheduler {
    timers: Mutex<Timers>,
    changed: Notify,
}

impl Scheduler {
    /// Sets (or with `None` clears) the wake time of a session.
    pub fn set(&self, id: &SessionId, wake: Option<OffsetDateTime>) {
        let mut t = self.timers.lock().unwrap_or_else(|e| e.into_inner());
        match wake {
            None => {
                t.due.remove(id);
            }
            Some(at) => {
                match t.due.get(id) {
                    Some(cur) if *cur == at => return,
                    // The heap already holds an earlier entry; when it comes up, it is moved to `at`.
                    // Timers that only move later (heartbeats) thus never grow the heap.
                    Some(cur) if *cur < at => {
                        t.due.insert(id.clone(), at);
                        return;
                    }
                    _ => {}
                }
                let earliest = t.heap.peek().map(|Reverse((w, _))| *w);
                t.due.insert(id.clone(), at);
                t.heap.push(Reverse((at, id.clone())));
                if earliest.is_none_or(|e| at < e) {
                    drop(t);
                    self.changed.notify_one();
                }
            }
        }
    }

    /// How many sessions have a timer.
    pub fn len(&self) -> usize {
        self.timers.lock().unwrap_or_else(|e| e.into_inner()).due.len()
    }

    /// True when no timer is set.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least one timer is due and returns the due sessions with their wake times.
    pub async fn next_due(&self, clock: &dyn Clock) -> Vec<(SessionId, OffsetDateTime)> {
        loop {
            let wait = {
                let mut t = self.timers.lock().unwrap_or_else(|e| e.into_inner());
                let now = clock.now();
                let mut out = Vec::new();
                while let Some(Reverse((at, id))) = t.heap.peek().cloned() {
                    match t.due.get(&id).copied() {
                        None => {
                            t.heap.pop();
                            continue;
                        }
                        Some(due) if due > at => {
                            t.heap.pop();
                            t.heap.push(Reverse((due, id)));
                            continue;
                        }
                        Some(due) if due < at => {
                            // A stale later entry; the earlier one was handled already.
                            t.heap.pop();
                            continue;
                        }
                        Some(_) => {}
                    }
                    if at > now {
                        break;
                    }
                    t.heap.pop();
                    t.due.remove(&id);
                    out.push((id, at));
                }
                if !out.is_empty() {
                    return out;
                }
                t.heap
                    .peek()
                    .map(|Reverse((at, _))| (*at - now).unsigned_abs())
                    .unwrap_or(std::time::Duration::from_secs(3600))
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stint_core::ManualClock;
    use time::macros::datetime;

    #[tokio::test]
    async fn timers_fire_in_order_and_moving_later_does_not_grow_the_heap() {
        let clock = ManualClock::new(datetime!(2026-01-01 0:00 UTC));
        let s = Scheduler::default();
        let (a, b) = (SessionId::from_u128(1), SessionId::from_u128(2));
        let t0 = clock.now();
        s.set(&a, Some(t0 + time::Duration::seconds(10)));
        s.set(&b, Some(t0 + time::Duration::seconds(5)));
        for k in 11..1000 {
            s.set(&a, Some(t0 + time::Duration::seconds(k)));
        }
        assert_eq!(s.timers.lock().map(|t| t.heap.len()).unwrap_or(0), 2);
        clock.advance(time::Duration::seconds(6));
        assert_eq!(
            s.next_due(&clock)
                .await
                .iter()
                .map(|(id, _)| id.clone())
                .collect::<Vec<_>>(),
            vec![b]
        );
        clock.advance(time::Duration::seconds(500));
        // a's old entry (10 s) comes up first and is moved to 999 s: nothing is due yet.
        let t = tokio::time::timeout(std::time::Duration::from_millis(50), s.next_due(&clock)).await;
        assert!(t.is_err());
        clock.advance(time::Duration::seconds(500));
        let due = s.next_due(&clock).await;
        assert_eq!(due, vec![(a, t0 + time::Duration::seconds(999))]);
        assert!(s.is_empty());
    }
}
