//! Sandbox cgroups, v1 and v2, created below the server's own cgroup.
