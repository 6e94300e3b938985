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

/// The timer set.
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
                if t.due.get(id) == Some(&at) {
                    return;
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
                    if t.due.get(&id) != Some(&at) {
                        t.heap.pop();
                        continue;
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
