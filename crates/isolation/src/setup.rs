//! The setup stage: `daytona-daemon setup`.

/// Entry point of `daytona-daemon setup`. Never returns.
pub fn main() -> ! {
    unimplemented!("setup stage")
}
