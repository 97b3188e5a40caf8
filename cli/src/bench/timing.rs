//! Timing a reader can trust: a measurement and its roof are taken in turn (A B A B …), so
//! that whatever else loads the machine slows both alike; each is reported as the median of
//! its samples with the interquartile range, and the process's CPU time is kept beside the
//! wall time (on a CPU device such as lavapipe the "GPU" is these same cores).

use std::time::{Duration, Instant};

use crate::error::Result;

/// Durations of one measurement, seconds per unit of work, sorted.
#[derive(Clone, Debug, PartialEq)]
pub struct Samples(Vec<f64>);

impl Samples {
    /// The samples, in any order (non-empty, none NaN).
    pub fn new(mut seconds: Vec<f64>) -> Self {
        seconds.sort_by(f64::total_cmp);
        Samples(seconds)
    }

    /// The value below which `q` of the samples lie (nearest rank; `q` in [0, 1]).
    pub fn quantile(&self, q: f64) -> f64 {
        let last = self.0.len().saturating_sub(1);
        self.0.get((q * last as f64).round() as usize).copied().unwrap_or(f64::NAN)
    }

    /// The median.
    pub fn median(&self) -> f64 {
        self.quantile(0.5)
    }

    /// The first and third quartiles.
    pub fn quartiles(&self) -> (f64, f64) {
        (self.quantile(0.25), self.quantile(0.75))
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One side of an interleaved measurement: a call that does `units` units of work and
/// returns the wall-clock seconds it took.
pub struct Timed<F> {
    /// The call.
    pub run: F,
    /// Units of work per call (steps, copies).
    pub units: u32,
}

/// What [`interleaved`] measured.
#[derive(Clone, Debug)]
pub struct Interleaved {
    /// The roof's seconds per unit.
    pub roof: Samples,
    /// The measurement's seconds per unit.
    pub step: Samples,
    /// The process's CPU seconds (user + system, all threads) per unit of the measurement,
    /// where the system says.
    pub step_cpu: Option<f64>,
}

/// Runs `roof` and `step` in turn until each ran `min_rounds` times and `min_time` has
/// passed.
pub fn interleaved<A, B>(
    min_rounds: usize,
    min_time: Duration,
    mut roof: Timed<A>,
    mut step: Timed<B>,
) -> Result<Interleaved>
where
    A: FnMut() -> Result<f64>,
    B: FnMut() -> Result<f64>,
{
    let start = Instant::now();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let mut cpu = Some(0.0);
    while a.len() < min_rounds.max(1) || start.elapsed() < min_time {
        a.push((roof.run)()? / f64::from(roof.units));
        let before = process_cpu_seconds();
        b.push((step.run)()? / f64::from(step.units));
        cpu = match (cpu, before, process_cpu_seconds()) {
            (Some(total), Some(x), Some(y)) => Some(total + (y - x)),
            _ => None,
        };
    }
    let calls = b.len() as f64 * f64::from(step.units);
    Ok(Interleaved { roof: Samples::new(a), step: Samples::new(b), step_cpu: cpu.map(|c| c / calls) })
}

/// Wall-clock seconds of `f`.
pub fn timed(f: impl FnOnce() -> Result<()>) -> Result<f64> {
    let t = Instant::now();
    f()?;
    Ok(t.elapsed().as_secs_f64())
}

/// User and system CPU seconds of this process so far, all threads.
#[cfg(unix)]
pub fn process_cpu_seconds() -> Option<f64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a whole `rusage` into the pointer it is given, which points to
    // one; RUSAGE_SELF is always a valid `who`.
    let ok = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) } == 0;
    // SAFETY: zero-initialised, and filled in by getrusage when it succeeded.
    let usage = unsafe { usage.assume_init() };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    ok.then(|| seconds(usage.ru_utime) + seconds(usage.ru_stime))
}

/// User and system CPU seconds of this process so far (not known on this system).
#[cfg(not(unix))]
pub fn process_cpu_seconds() -> Option<f64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_and_quartiles_are_order_statistics() {
        let s = Samples::new(vec![5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((s.median(), s.quartiles()), (3.0, (2.0, 4.0)));
        assert_eq!(Samples::new(vec![7.0]).quartiles(), (7.0, 7.0));
    }

    #[test]
    fn measurements_alternate_and_cpu_time_is_counted() {
        let order = std::cell::RefCell::new(String::new());
        // A call that notes its name in `order` and spins for `ms` milliseconds.
        let spinning = |name: char, ms: u64| {
            let order = &order;
            move || {
                order.borrow_mut().push(name);
                timed(|| {
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_millis(ms) {}
                    Ok(())
                })
            }
        };
        let roof = Timed { run: spinning('A', 1), units: 1 };
        let step = Timed { run: spinning('B', 4), units: 2 };
        let m = interleaved(3, Duration::ZERO, roof, step).unwrap();
        assert_eq!(order.into_inner(), "ABABAB");
        assert_eq!((m.roof.len(), m.step.len()), (3, 3));
        // 4 ms per call of two units: about 2 ms per unit of wall time, and of CPU time.
        assert!(m.step.median() >= 0.002 && m.step.median() < 0.02, "{:?}", m.step);
        let cpu = m.step_cpu.unwrap();
        assert!(cpu > 0.001 && cpu < 0.02, "{cpu}");
    }
}
