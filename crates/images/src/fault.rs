//! Fault injection for crash-safety tests.
//!
//! Compiled in only with the `fault-injection` feature (and in this crate's own tests).
//! `DAYTONA_FAULT=<step>:<fail|exit|hang>` makes the writer fail, exit the process, or hang when
//! it reaches `step`. Steps are named `<operation>.<point>`, such as `import.blobs-written`.

use crate::Error;

/// What happens at the step.
#[cfg(any(test, feature = "fault-injection"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// The operation returns [`Error::FaultInjected`] and cleans up as after any failure.
    Fail,
    /// The process exits at once with status 86, as a crash would end it. In this crate's unit
    /// tests it panics instead, so the test survives and sees what a crash leaves.
    Exit,
    /// The thread sleeps until the process is killed.
    Hang,
}

#[cfg(test)]
thread_local! {
    /// The fault of the current test thread, so that parallel tests do not see each other's.
    pub(crate) static TEST_FAULT: std::cell::Cell<Option<(&'static str, Action)>> =
        const { std::cell::Cell::new(None) };
}

/// Returns the configured fault, if it is for `step`.
#[cfg(any(test, feature = "fault-injection"))]
fn configured(step: &str) -> Option<Action> {
    #[cfg(test)]
    if let Some((name, action)) = TEST_FAULT.with(std::cell::Cell::get) {
        return (name == step).then_some(action);
    }
    let value = std::env::var("DAYTONA_FAULT").ok()?;
    let (name, action) = value.split_once(':')?;
    if name != step {
        return None;
    }
    match action {
        "fail" => Some(Action::Fail),
        "exit" => Some(Action::Exit),
        "hang" => Some(Action::Hang),
        _ => None,
    }
}

/// Applies the fault configured for `step`, if any.
#[cfg(any(test, feature = "fault-injection"))]
pub fn hit(step: &'static str) -> Result<(), Error> {
    match configured(step) {
        None => Ok(()),
        Some(Action::Fail) => Err(Error::FaultInjected { step }),
        Some(Action::Exit) => {
            tracing::warn!(step, "fault injection: exiting");
            if cfg!(test) {
                panic!("fault injection: crash at {step}");
            }
            std::process::exit(86)
        }
        Some(Action::Hang) => {
            tracing::warn!(step, "fault injection: hanging");
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

/// Without the `fault-injection` feature no step ever fails.
#[cfg(not(any(test, feature = "fault-injection")))]
#[inline(always)]
pub fn hit(_step: &'static str) -> Result<(), Error> {
    Ok(())
}
