//! The snapshot manager's image store.
