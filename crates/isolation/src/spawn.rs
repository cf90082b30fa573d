//! Runner side: start the setup stage and track the sandbox's PID 1.
