//! The containers and volumes the injector adds: broker, iptables init, and their volumes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, Probe,
    ProjectedVolumeSource, ResourceRequirements, SeccompProfile, SecurityContext, ServiceAccountTokenProjection, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::options::PodOptions;
use crate::config::{CpuMemory, InjectorConfig};
use crate::conventions::*;

/// The broker container, as a native sidecar when `native` is set.
pub fn broker_container(config: &InjectorConfig, options: &PodOptions, native: bool) -> Container {
    Container {
        name: BROKER_CONTAINER_NAME.to_owned(),
        image: Some(config.broker.image.clone()),
        image_pull_policy: config.broker.image_pull_policy.clone(),
        args: Some(BROKER_ARGS.iter().map(|a| (*a).to_owned()).collect()),
        // `Always` on an init container is what makes it a native sidecar: it starts before
        // the agents, keeps running beside them, and does not keep a Job from completing.
        restart_policy: native.then(|| "Always".to_owned()),
        ports: Some(broker_ports()),
        env: Some(broker_env(options)),
        resources: Some(resources(config)),
        // For a native sidecar the kubelet starts the next container only after the startup
        // probe passes, so agents never start before the broker can serve them.
        startup_probe: Some(probe(READINESS_PATH, 1, 60)),
        readiness_probe: Some(probe(READINESS_PATH, 5, 3)),
        liveness_probe: Some(probe(LIVENESS_PATH, 10, 3)),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(BROKER_UID),
            read_only_root_filesystem: Some(true),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), add: None }),
            seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".to_owned(), localhost_profile: None }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(vec![
            mount(CA_VOLUME_NAME, CA_DIR, false),
            mount(CONFIG_VOLUME_NAME, BROKER_CONFIG_DIR, true),
            mount(TOKEN_VOLUME_NAME, TOKEN_DIR, true),
            mount(AUDIT_VOLUME_NAME, AUDIT_DIR, false),
        ]),
        ..Container::default()
    }
}

/// The transparent-mode init container that installs the iptables redirect.
pub fn iptables_init_container(config: &InjectorConfig) -> Container {
    let ports = config.redirect_ports.iter().map(u16::to_string).collect::<Vec<_>>().join(",");
    Container {
        name: IPTABLES_INIT_CONTAINER_NAME.to_owned(),
        image: Some(config.broker.image.clone()),
        image_pull_policy: config.broker.image_pull_policy.clone(),
        args: Some(vec![
            "iptables-init".to_owned(),
            "--proxy-port".to_owned(),
            TRANSPARENT_PORT.to_string(),
            "--ports".to_owned(),
            ports,
            "--exclude-uid".to_owned(),
            BROKER_UID.to_string(),
        ]),
        resources: Some(resources(config)),
        // Changing the pod's netfilter rules needs root with NET_ADMIN/NET_RAW; only for this
        // short-lived container, and nothing else is granted.
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            run_as_non_root: Some(false),
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities { add: Some(vec!["NET_ADMIN".to_owned(), "NET_RAW".to_owned()]), drop: Some(vec!["ALL".to_owned()]) }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

/// The pod volumes the broker needs: CA (shared), config, projected token, audit log.
pub fn broker_volumes(options: &PodOptions) -> Vec<Volume> {
    vec![
        Volume {
            name: CA_VOLUME_NAME.to_owned(),
            // Memory-backed: the CA certificate is tiny and need not touch the node's disk.
            empty_dir: Some(EmptyDirVolumeSource { medium: Some("Memory".to_owned()), size_limit: Some(Quantity("1Mi".to_owned())) }),
            ..Volume::default()
        },
        Volume {
            name: CONFIG_VOLUME_NAME.to_owned(),
            config_map: Some(ConfigMapVolumeSource { name: options.config_map.clone(), ..ConfigMapVolumeSource::default() }),
            ..Volume::default()
        },
        Volume {
            name: TOKEN_VOLUME_NAME.to_owned(),
            projected: Some(ProjectedVolumeSource {
                sources: Some(vec![VolumeProjection {
                    service_account_token: Some(ServiceAccountTokenProjection {
                        audience: Some(TOKEN_AUDIENCE.to_owned()),
                        expiration_seconds: Some(TOKEN_EXPIRATION_SECONDS),
                        path: TOKEN_FILE_NAME.to_owned(),
                    }),
                    ..VolumeProjection::default()
                }]),
                ..ProjectedVolumeSource::default()
            }),
            ..Volume::default()
        },
        Volume {
            name: AUDIT_VOLUME_NAME.to_owned(),
            // Disk-backed (not Memory) so a long-running pod's log does not count against its
            // memory limit; it still goes with the pod, so ship it off the node for retention.
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        },
    ]
}

/// The read-only CA mount every agent container gets.
pub fn agent_ca_mount() -> VolumeMount {
    mount(CA_VOLUME_NAME, CA_DIR, true)
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount { name: name.to_owned(), mount_path: path.to_owned(), read_only: Some(read_only), ..VolumeMount::default() }
}

fn broker_ports() -> Vec<ContainerPort> {
    [("cb-admin", ADMIN_PORT), ("cb-health", HEALTH_PORT), ("cb-proxy", PROXY_PORT), ("cb-transparent", TRANSPARENT_PORT), ("cb-postgres", POSTGRES_PORT)]
        .into_iter()
        .map(|(name, port)| ContainerPort {
            name: Some(name.to_owned()),
            container_port: i32::from(port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        })
        .collect()
}

fn broker_env(options: &PodOptions) -> Vec<EnvVar> {
    let mut env = vec![
        field_env(ENV_POD_NAME, "metadata.name"),
        field_env(ENV_POD_NAMESPACE, "metadata.namespace"),
        field_env(ENV_SERVICE_ACCOUNT, "spec.serviceAccountName"),
        literal_env(ENV_AGENT_ID, &options.agent_id),
        literal_env(ENV_TENANT, &options.tenant),
    ];
    if let Some(policy) = &options.policy {
        env.push(literal_env(ENV_POLICY_BUNDLE, policy));
    }
    env
}

fn field_env(name: &str, field_path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: field_path.to_owned(), api_version: Some("v1".to_owned()) }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A plain `name=value` env var.
pub fn literal_env(name: &str, value: &str) -> EnvVar {
    EnvVar { name: name.to_owned(), value: Some(value.to_owned()), ..EnvVar::default() }
}

fn resources(config: &InjectorConfig) -> ResourceRequirements {
    let map = |pair: &CpuMemory| BTreeMap::from([("cpu".to_owned(), Quantity(pair.cpu.clone())), ("memory".to_owned(), Quantity(pair.memory.clone()))]);
    ResourceRequirements { requests: Some(map(&config.broker.requests)), limits: Some(map(&config.broker.limits)), ..ResourceRequirements::default() }
}

fn probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction { path: Some(path.to_owned()), port: IntOrString::Int(i32::from(HEALTH_PORT)), ..HTTPGetAction::default() }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        ..Probe::default()
    }
}
