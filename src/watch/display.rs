//! Showing a journey while it moves. On a terminal: one line per stage, redrawn in place
//! (indicatif), with events printed above. Otherwise: plain lines, one per change, each
//! stamped with the watch clock's time, so logs and pipes stay readable.

use std::io::{IsTerminal, Write};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::core::journey::StageState;
use crate::view::JourneyView;

use super::monitor::stage_status;

enum Mode {
    Live { multi: MultiProgress, bars: Vec<(String, ProgressBar)> },
    Plain { out: Box<dyn Write + Send> },
}

pub struct Display {
    mode: Mode,
    /// The first failed write (a closed pipe: `watch … | head`): the loop stops on it.
    write_error: Option<std::io::Error>,
}

/// `HH:MM:SS` UTC of a unix time.
pub(crate) fn clock_time(t: i64) -> String {
    let f = time::macros::format_description!("[hour]:[minute]:[second]");
    time::OffsetDateTime::from_unix_timestamp(t).ok().and_then(|d| d.format(f).ok()).unwrap_or_else(|| t.to_string())
}

impl Display {
    /// Live when the chosen stream (stderr with `to_stderr`, else stdout) is a terminal.
    pub fn new(to_stderr: bool) -> Display {
        let term = if to_stderr { std::io::stderr().is_terminal() } else { std::io::stdout().is_terminal() };
        if term {
            let target = if to_stderr { ProgressDrawTarget::stderr() } else { ProgressDrawTarget::stdout() };
            Display {
                mode: Mode::Live { multi: MultiProgress::with_draw_target(target), bars: vec![] },
                write_error: None,
            }
        } else {
            let out: Box<dyn Write + Send> =
                if to_stderr { Box::new(std::io::stderr()) } else { Box::new(std::io::stdout()) };
            Display { mode: Mode::Plain { out }, write_error: None }
        }
    }

    /// Plain lines into `out`, whatever it is (for tests of the plain form).
    pub fn plain(out: Box<dyn Write + Send>) -> Display {
        Display { mode: Mode::Plain { out }, write_error: None }
    }

    /// The first write that failed since the last call, if any.
    pub fn take_write_error(&mut self) -> Option<std::io::Error> {
        self.write_error.take()
    }

    pub fn is_live(&self) -> bool {
        matches!(self.mode, Mode::Live { .. })
    }

    /// An event or a message, stamped with the watch clock's time.
    pub fn say(&mut self, now: i64, line: &str) {
        let text = format!("{} {line}", clock_time(now));
        match &mut self.mode {
            Mode::Live { multi, .. } => {
                // println on a hidden target is dropped; the draw target is a terminal here.
                let _ = multi.println(text);
            }
            Mode::Plain { out } => {
                if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
                    self.write_error.get_or_insert(e);
                }
            }
        }
    }

    /// Redraw the per-stage lines (live only; plain output says changes through `say`).
    pub fn update(&mut self, j: &JourneyView, now: i64) {
        let Mode::Live { multi, bars } = &mut self.mode else { return };
        let width = j.stages.iter().map(|s| s.name.len()).max().unwrap_or(8);
        for s in &j.stages {
            let bar = match bars.iter().find(|(n, _)| n == &s.name) {
                Some((_, b)) => b.clone(),
                None => {
                    let b = multi.add(ProgressBar::new_spinner().with_prefix(s.name.clone()));
                    bars.push((s.name.clone(), b.clone()));
                    b
                }
            };
            // A spinner while running; a fixed mark otherwise.
            let mark = match s.state {
                StageState::Running => "{spinner}",
                StageState::Succeeded => "✓",
                StageState::Failed => "✗",
                StageState::NotApplicable => "-",
                StageState::Waiting
                | StageState::Pending
                | StageState::Riding
                | StageState::Incomplete
                | StageState::AwaitingApproval => "·",
            };
            let style = ProgressStyle::with_template(&format!("{{prefix:<{width}}} {mark} {{wide_msg}}"))
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_message(stage_status(s, now));
            if s.state == StageState::Running {
                bar.tick();
            }
        }
    }

    /// Leave the stage lines as they are and stop redrawing.
    pub fn finish(&mut self) {
        if let Mode::Live { bars, .. } = &mut self.mode {
            for (_, b) in bars.iter() {
                b.finish();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn plain_lines_are_stamped_and_free_of_control_characters() {
        let buf = Buf::default();
        let mut d = Display::plain(Box::new(buf.clone()));
        assert!(!d.is_live());
        // 2026-03-02 08:12:30 UTC
        d.say(1_772_438_400 + 750, "tests: started (test-bats #3)");
        d.say(1_772_438_400 + 751, "tests: succeeded");
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text, "08:12:30 tests: started (test-bats #3)\n08:12:31 tests: succeeded\n");
    }

    /// A closed pipe is remembered (once, the first error) for the loop to stop on.
    #[test]
    fn a_failed_write_is_kept_for_the_loop() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> std::io::Result<usize> {
                Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let mut d = Display::plain(Box::new(Closed));
        assert!(d.take_write_error().is_none());
        d.say(0, "one");
        d.say(1, "two");
        assert_eq!(d.take_write_error().map(|e| e.kind()), Some(std::io::ErrorKind::BrokenPipe));
        assert!(d.take_write_error().is_none());
    }
}
