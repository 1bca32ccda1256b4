//! Per-connection rate limit (SPEC 7): a token bucket for the excess frames, and a
//! per-second window that spots a client over its rate for 10 s in a row (4008).

use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(1);
const ABUSE_WINDOWS: u32 = 10;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// This frame is over the rate: answer `rate_limited`, do nothing else.
    Limited,
    /// Over the rate for 10 s in a row: close 4008.
    Abuse,
}

pub struct RateLimiter {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    window_start: Instant,
    window_count: u32,
    over_streak: u32,
}

impl RateLimiter {
    pub fn new(rate: u32, burst: u32, now: Instant) -> RateLimiter {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
            window_start: now,
            window_count: 0,
            over_streak: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.duration_since(self.window_start);
        if elapsed >= WINDOW {
            let over = f64::from(self.window_count) > self.rate;
            // A gap of more than one window means at least one quiet second.
            self.over_streak = if over && elapsed < WINDOW * 2 {
                self.over_streak + 1
            } else {
                0
            };
            self.window_start = now;
            self.window_count = 0;
        }
        self.window_count += 1;
        if self.over_streak >= ABUSE_WINDOWS {
            return Verdict::Abuse;
        }
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Verdict::Allow
        } else {
            Verdict::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_limited_then_abuse() {
        let t0 = Instant::now();
        let mut r = RateLimiter::new(20, 40, t0);
        let verdicts: Vec<_> = (0..41).map(|_| r.check(t0)).collect();
        assert!(verdicts[..40].iter().all(|v| *v == Verdict::Allow));
        assert_eq!(verdicts[40], Verdict::Limited);
        // 100 frames a second for 11 seconds: abuse once 10 windows in a row were over.
        let mut abused = false;
        for i in 0..1100u64 {
            if r.check(t0 + Duration::from_millis(10 * i + 5)) == Verdict::Abuse {
                abused = true;
                break;
            }
        }
        assert!(abused);
        // A calm client never is.
        let mut calm = RateLimiter::new(20, 40, t0);
        for i in 0..200u64 {
            assert_eq!(
                calm.check(t0 + Duration::from_millis(100 * i)),
                Verdict::Allow
            );
        }
    }
}
