//! Bounded debounce: a burst of changes becomes one rebuild, and a steady stream of them still
//! gets rebuilds.
//!
//! Waiting for quiet alone would postpone a change for as long as events keep coming (on a real
//! cluster Pods change all the time), so every burst also has a deadline counted from its first
//! event: Istio's `PILOT_DEBOUNCE_AFTER` / `PILOT_DEBOUNCE_MAX`, with a far lower maximum.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

/// How long a burst of changes is waited out before it is acted on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Debounce {
    /// Act once this long has passed without a change.
    pub quiet: Duration,
    /// Act at the latest this long after the burst's first change, however busy it stays.
    pub max: Duration,
}

impl Default for Debounce {
    fn default() -> Self {
        Self {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(1),
        }
    }
}

impl Debounce {
    /// When to act on a burst whose first change came at `first` and latest at `last`.
    pub fn deadline(&self, first: Instant, last: Instant) -> Instant {
        (last + self.quiet).min(first + self.max)
    }

    /// Waits out the burst that began with a change just received: returns `true` when it is
    /// time to act, `false` when `changes` closed.
    pub async fn settle(&self, changes: &mut mpsc::Receiver<()>) -> bool {
        let first = Instant::now();
        let mut last = first;
        loop {
            match tokio::time::timeout_at(self.deadline(first, last), changes.recv()).await {
                Ok(Some(())) => last = Instant::now(),
                Ok(None) => return false,
                Err(_) => return true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_ends_after_quiet_or_at_its_maximum() {
        let d = Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_millis(1000),
        };
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (last change after the first, act after the first)
        let table = [
            (ms(0), ms(100)),    // a single change: the quiet time
            (ms(450), ms(550)),  // a short burst: quiet after its last change
            (ms(900), ms(1000)), // quiet would pass the maximum: the maximum
            (ms(5000), ms(1000)),
        ];
        for (last, act) in table {
            assert_eq!(
                d.deadline(t0, t0 + last),
                t0 + act,
                "last change at {last:?}"
            );
        }
    }

    /// A change every 50 ms for 3 s is acted on every second, not once after it stops.
    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_is_acted_on_at_each_maximum() {
        let d = Debounce {
            quiet: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        let (tx, mut rx) = mpsc::channel(1);
        tokio::spawn(async move {
            for _ in 0..60 {
                let _ = tx.send(()).await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let t0 = Instant::now();
        let mut acted = Vec::new();
        while rx.recv().await.is_some() {
            if !d.settle(&mut rx).await {
                break;
            }
            acted.push(t0.elapsed());
        }
        assert!(acted.len() >= 3, "acted at {acted:?}");
        for pair in acted.windows(2) {
            assert!(
                pair[1] - pair[0] <= Duration::from_millis(1100),
                "{acted:?}"
            );
        }
    }
}
