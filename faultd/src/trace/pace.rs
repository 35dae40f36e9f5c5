//! A per-subscriber event rate: a token bucket a watcher waits on before sending a batch.
//!
//! A watcher paced below the rate its session produces falls behind in the ring and is then told how
//! many events it lost (an [`EventKind::Dropped`](super::EventKind::Dropped)), exactly like a slow
//! client: the rate bounds what one subscriber costs faultd, never what a target may do.

use std::time::Duration;

use tokio::time::Instant;

/// Lets at most `rate` events a second through, in bursts of up to one second's worth.
#[derive(Debug)]
pub struct Pace {
    rate: f64,
    tokens: f64,
    refilled: Instant,
}

impl Pace {
    /// A bucket of `rate` events per second, full; `0` means unlimited.
    pub fn new(rate: u32) -> Self {
        Pace {
            rate: rate.into(),
            tokens: rate.into(),
            refilled: Instant::now(),
        }
    }

    /// Waits until `events` more may be sent, then takes them (a batch larger than the burst waits
    /// for the deficit: the bucket goes negative and the next batch waits longer).
    pub async fn take(&mut self, events: usize) {
        if self.rate == 0.0 {
            return;
        }
        let now = Instant::now();
        let earned = now.duration_since(self.refilled).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + earned).min(self.rate);
        self.refilled = now;
        self.tokens -= events as f64;
        if self.tokens < 0.0 {
            let wait = Duration::from_secs_f64(-self.tokens / self.rate);
            tokio::time::sleep(wait).await;
            self.tokens = 0.0;
            self.refilled = Instant::now();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the clock only moves when every task waits, so these measure the waits exactly.
    #[tokio::test(start_paused = true)]
    async fn a_burst_passes_then_the_rate_holds() {
        let mut pace = Pace::new(1000);
        let start = Instant::now();
        pace.take(1000).await;
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "one second's worth passes at once"
        );
        for _ in 0..10 {
            pace.take(500).await;
        }
        let waited = start.elapsed().as_secs_f64();
        assert!(
            (4.99..5.01).contains(&waited),
            "5000 more events at 1000/s took {waited} s"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_is_unlimited() {
        let mut pace = Pace::new(0);
        let start = Instant::now();
        pace.take(usize::MAX).await;
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
