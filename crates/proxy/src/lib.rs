//! Toolbox proxy.
