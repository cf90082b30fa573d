//! Conversion of stored records to the wire shapes the SDKs read.

use daytona_wire::api::{Sandbox, Snapshot};

use crate::config::TARGET;
use crate::state::Shared;
use crate::store::{SandboxRecord, SnapshotRecord};

/// Identifier of the one local runner, reported as `runnerId`.
pub const LOCAL_RUNNER_ID: &str = "local";

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

pub fn sandbox(state: &Shared, record: &SandboxRecord) -> Sandbox {
    Sandbox {
        id: record.id.clone(),
        organization_id: record.organization_id.clone(),
        name: record.name.clone(),
        snapshot: record.snapshot.clone(),
        user: record.os_user.clone(),
        env: record.env.clone(),
        labels: record.labels.clone(),
        public: record.public,
        network_block_all: record.network_block_all,
        kvm: false,
        network_allow_list: record.network_allow_list.clone(),
        domain_allow_list: record.domain_allow_list.clone(),
        outbound_proxy_url: None,
        otel_endpoint_override: None,
        target: record.target.clone(),
        cpu: record.cpu,
        gpu: record.gpu,
        spot: false,
        spot_evicted_at: None,
        queue_timed_out_at: None,
        gpu_type: None,
        memory: record.memory,
        disk: record.disk,
        state: record.state,
        desired_state: record.desired_state.clone(),
        error_reason: record.error_reason.clone(),
        recoverable: record.error_reason.as_ref().map(|_| true),
        warm_pool_id: None,
        backup_state: None,
        backup_created_at: None,
        auto_stop_interval: record.auto_stop_interval,
        auto_pause_interval: record.auto_pause_interval,
        auto_archive_interval: record.auto_archive_interval,
        auto_delete_interval: record.auto_delete_interval,
        auto_destroy_at: record.auto_destroy_at.clone(),
        queue_timeout: None,
        volumes: record.volumes.clone(),
        build_info: None,
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        last_activity_at: record.last_activity_at.clone(),
        sandbox_class: "container".to_owned(),
        daemon_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
        runner_id: Some(LOCAL_RUNNER_ID.to_owned()),
        linked_sandbox_id: None,
        toolbox_proxy_url: state.toolbox_proxy_url(),
    }
}

pub fn snapshot(record: &SnapshotRecord) -> Snapshot {
    Snapshot {
        id: record.id.clone(),
        organization_id: record.organization_id.clone(),
        general: record.general,
        name: record.name.clone(),
        image_name: record.image_name.clone(),
        state: record.state,
        size: record
            .size_bytes
            .map(|bytes| (bytes as f64 / GIB * 100.0).round() / 100.0),
        entrypoint: record.entrypoint.clone(),
        cpu: record.cpu,
        gpu: record.gpu,
        gpu_type: None,
        mem: record.memory,
        disk: record.disk,
        error_reason: record.error_reason.clone(),
        created_at: record.created_at.clone(),
        updated_at: record.updated_at.clone(),
        last_used_at: record.last_used_at.clone(),
        build_info: None,
        region_ids: Some(vec![TARGET.to_owned()]),
        initial_runner_id: Some(LOCAL_RUNNER_ID.to_owned()),
        reference: record.image_digest.clone(),
        source_sandbox_id: None,
        sandbox_class: Some("container".to_owned()),
    }
}
