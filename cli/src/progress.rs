//! Progress of long jobs on stderr: one plain line when a stage ends (what a CI log or a pipe
//! gets), and on a terminal also a live bar for the running stage with done/total, rate and ETA;
//! nothing with `--quiet`.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::time::Instant;

#[derive(Clone, Copy)]
pub struct Progress {
    quiet: bool,
    terminal: bool,
}

impl Progress {
    pub fn new(quiet: bool) -> Progress {
        Progress { quiet, terminal: std::io::stderr().is_terminal() }
    }

    /// Starts a stage of `total` steps counted in `unit` (e.g. "samples", "iterations").
    pub fn stage(&self, name: impl Into<String>, total: usize, unit: &'static str) -> Stage {
        let name = name.into();
        let bar = (self.terminal && !self.quiet).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            // The note (e.g. the layer and its loss) comes last and is cut to the terminal's width.
            let style = ProgressStyle::with_template("{prefix} [{bar:20}] {pos}/{len} {rate} ETA {eta} {wide_msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.0}/s", s.per_sec());
                })
                .progress_chars("=> ");
            bar.set_style(style);
            bar.set_prefix(name.clone());
            bar
        });
        Stage { name, unit, total, done: 0, note: String::new(), start: Instant::now(), bar, plain: !self.quiet }
    }
}

/// One stage of a job. [`Stage::finish`] ends it; a stage dropped unfinished (an error or a
/// cancel) clears its bar and prints nothing.
pub struct Stage {
    name: String,
    unit: &'static str,
    total: usize,
    done: usize,
    note: String,
    start: Instant,
    bar: Option<ProgressBar>,
    /// Print the stage's line when it ends.
    plain: bool,
}

impl Stage {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn set(&mut self, done: usize) {
        self.done = done;
        if let Some(b) = &self.bar {
            b.set_position(done as u64);
        }
    }

    /// A short figure shown after the count (e.g. the current loss), and in the plain line.
    pub fn note(&mut self, note: String) {
        if let Some(b) = &self.bar {
            b.set_message(note.clone());
        }
        self.note = note;
    }

    pub fn finish(mut self) {
        let secs = self.start.elapsed().as_secs_f64();
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
        if self.plain {
            let note = if self.note.is_empty() { String::new() } else { format!(", {}", self.note) };
            let rate = if secs > 0.0 { format!(" ({:.1} {}/s)", self.done as f64 / secs, self.unit) } else { String::new() };
            eprintln!("{}: {}/{} {} in {secs:.1} s{rate}{note}", self.name, self.done, self.total, self.unit);
        }
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}
