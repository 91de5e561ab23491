//! The simulator's own clock. Virtual Unix seconds that run at real speed, accelerated, or only
//! when a test steps them.

use std::sync::Mutex;
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ClockMode {
    /// Virtual time advances `speed` virtual seconds per real second.
    Running { speed: f64 },
    /// Virtual time advances only through [`SimClock::step`] / [`SimClock::set`].
    Stepped,
}

#[derive(Debug)]
pub struct SimClock {
    inner: Mutex<ClockInner>,
}

#[derive(Debug)]
struct ClockInner {
    mode: ClockMode,
    anchor_real: Instant,
    anchor_virtual: f64,
}

impl SimClock {
    pub fn new(start: i64, mode: ClockMode) -> Self {
        SimClock { inner: Mutex::new(ClockInner { mode, anchor_real: Instant::now(), anchor_virtual: start as f64 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ClockInner> {
        // A poisoned clock only means a panicking reader; the data (two numbers) is still valid.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Current virtual time in Unix seconds.
    pub fn now(&self) -> i64 {
        let g = self.lock();
        now_of(&g).floor() as i64
    }

    pub fn mode(&self) -> ClockMode {
        self.lock().mode
    }

    /// Move virtual time forward by `secs` (any mode).
    pub fn step(&self, secs: i64) {
        let mut g = self.lock();
        let now = now_of(&g);
        g.anchor_virtual = now + secs.max(0) as f64;
        g.anchor_real = Instant::now();
    }

    /// Jump to `t` if it is in the future; time never runs backwards.
    pub fn set(&self, t: i64) {
        let mut g = self.lock();
        let now = now_of(&g);
        g.anchor_virtual = now.max(t as f64);
        g.anchor_real = Instant::now();
    }

    pub fn set_mode(&self, mode: ClockMode) {
        let mut g = self.lock();
        let now = now_of(&g);
        g.anchor_virtual = now;
        g.anchor_real = Instant::now();
        g.mode = mode;
    }
}

fn now_of(g: &ClockInner) -> f64 {
    match g.mode {
        ClockMode::Running { speed } => g.anchor_virtual + g.anchor_real.elapsed().as_secs_f64() * speed,
        ClockMode::Stepped => g.anchor_virtual,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stepped_clock_moves_only_when_stepped_and_never_backwards() {
        let c = SimClock::new(1_000, ClockMode::Stepped);
        assert_eq!(c.now(), 1_000);
        c.step(60);
        assert_eq!(c.now(), 1_060);
        c.set(500);
        assert_eq!(c.now(), 1_060);
        c.set(2_000);
        assert_eq!(c.now(), 2_000);
    }

    #[test]
    fn running_clock_is_accelerated() {
        let c = SimClock::new(0, ClockMode::Running { speed: 10_000.0 });
        std::thread::sleep(std::time::Duration::from_millis(20));
        // 20 ms at 10 000x is 200 virtual seconds; allow scheduling slack either way.
        let n = c.now();
        assert!((150..5_000).contains(&n), "{n}");
    }
}
