//! The progress bars of a bench run, on stderr: one while keys are preloaded, one while
//! the load runs. Hidden bars (no terminal, or `--json`) cost nothing to update.

use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar, or nothing if hidden.
pub struct Progress {
    bar: ProgressBar,
    planned: Duration,
}

fn bar(visible: bool, length: u64, template: &str) -> ProgressBar {
    let target = if visible {
        ProgressDrawTarget::stderr()
    } else {
        ProgressDrawTarget::hidden()
    };
    let bar = ProgressBar::with_draw_target(Some(length), target);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

impl Progress {
    /// A bar counting `keys` preloaded keys.
    pub fn preload(visible: bool, keys: u64) -> Progress {
        Progress {
            bar: bar(visible, keys, "preloading keys {pos}/{len} [{wide_bar}]"),
            planned: Duration::ZERO,
        }
    }

    /// A bar over the `planned` run time, with a message of requests done so far.
    pub fn run(visible: bool, planned: Duration) -> Progress {
        let millis = u64::try_from(planned.as_millis()).unwrap_or(u64::MAX);
        Progress {
            bar: bar(visible, millis, "running {msg} [{wide_bar}]"),
            planned,
        }
    }

    /// One more key preloaded.
    pub fn inc(&self) {
        self.bar.inc(1);
    }

    /// Shows the run's state: `elapsed` of the planned time, `ok` and `failed` requests,
    /// and refused compare-and-swaps (`conflicts`, shown once there are some).
    pub fn show(&self, elapsed: Duration, ok: u64, failed: u64, conflicts: u64) {
        let seconds = elapsed.as_secs_f64();
        self.bar
            .set_position(u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX));
        let conflicts = if conflicts > 0 {
            format!(", {conflicts} conflicts")
        } else {
            String::new()
        };
        self.bar.set_message(format!(
            "{seconds:.1}/{:.0} s, {ok} ops, {:.0} ops/s{conflicts}, {failed} errors",
            self.planned.as_secs_f64(),
            ok as f64 / seconds.max(1e-9),
        ));
    }

    /// Notes that the run is over but requests are still being answered.
    pub fn draining(&self) {
        self.bar
            .set_message("stopped, waiting for requests in flight");
    }

    /// Removes the bar.
    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}
