//! SPEC 12 deployment files, checked without a Docker engine: the compose file's
//! structure and mounts, the Prometheus config with the real promtool, and the
//! Grafana dashboard's coverage of the metrics.

use std::path::Path;
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> serde_yaml::Value {
    let text =
        std::fs::read_to_string(root().join("docker-compose.yml")).expect("docker-compose.yml");
    let mut v: serde_yaml::Value = serde_yaml::from_str(&text).expect("valid YAML");
    v.apply_merge().expect("merge keys resolve");
    v
}

#[test]
fn compose_has_redis_three_nodes_nginx_prometheus_grafana_and_every_mount_exists() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    for name in [
        "redis",
        "node1",
        "node2",
        "node3",
        "nginx",
        "prometheus",
        "grafana",
    ] {
        assert!(services.contains_key(name), "service {name} missing");
    }
    for n in ["node1", "node2", "node3"] {
        let s = &c["services"][n];
        assert_eq!(s["build"].as_str(), Some("."), "{n} builds the Dockerfile");
        let env = &s["environment"];
        assert_eq!(env["SWITCHYARD_NODE_ID"].as_str(), Some(n));
    }
    assert!(root().join("Dockerfile").is_file());
    let mut mounts = 0;
    for (_, s) in services {
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let spec = v.as_str().expect("short volume syntax");
            let host = spec.split(':').next().expect("host path");
            assert!(
                host.starts_with("./"),
                "bind mounts are project files: {spec}"
            );
            assert!(
                root().join(&host[2..]).exists(),
                "mounted file missing: {host}"
            );
            mounts += 1;
        }
    }
    assert!(
        mounts >= 5,
        "nginx, prometheus and grafana files are mounted"
    );
    let nginx_conf =
        std::fs::read_to_string(root().join("nginx/switchyard.conf")).expect("nginx conf");
    for n in ["node1:8080", "node2:8080", "node3:8080", "ip_hash"] {
        assert!(
            nginx_conf.contains(n),
            "nginx upstream names the compose nodes: {n}"
        );
    }
}

/// SPEC 10: the compose nodes run from a mounted config file (production mode) with
/// their secrets from the environment, and compose refuses to start without them:
/// no default secret that would work if left unchanged.
#[test]
fn compose_nodes_use_a_mounted_config_and_required_secrets_from_the_environment() {
    let c = compose();
    for n in ["node1", "node2", "node3"] {
        let s = &c["services"][n];
        let args: Vec<&str> = s["command"]
            .as_sequence()
            .expect("command list")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let at = args
            .iter()
            .position(|a| *a == "--config")
            .expect("--config");
        let inside = args[at + 1];
        let mount = s["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .filter_map(|v| v.as_str())
            .find(|v| v.split(':').nth(1) == Some(inside))
            .unwrap_or_else(|| panic!("{n}: {inside} is not mounted"));
        let host = root().join(&mount.split(':').next().expect("host")[2..]);
        let env = &s["environment"];
        for var in ["SWITCHYARD_AUTH__JWT_SECRET", "SWITCHYARD_API__KEY"] {
            let v = env[var]
                .as_str()
                .unwrap_or_else(|| panic!("{n}: {var} set"));
            assert!(
                v.starts_with("${") && v.contains(":?") && !v.contains(":-"),
                "{n}: {var} must be required from the environment with no default: {v}"
            );
        }
        let vars = [
            (
                "SWITCHYARD_AUTH__JWT_SECRET".to_owned(),
                "s3cret".to_owned(),
            ),
            ("SWITCHYARD_API__KEY".to_owned(), "k3y".to_owned()),
        ];
        let (config, unknown) =
            switchyard::Config::load_with_env(Some(&host), vars).expect("the mounted config loads");
        assert!(unknown.is_empty());
        assert!(!config.dev_mode, "{n} is a production node");
        assert_eq!(config.broker, switchyard::config::BrokerKind::Redis);
        assert!(config.redis.url.contains("redis:6379"));
        assert_eq!(config.listen, "0.0.0.0:8080");
        let text = std::fs::read_to_string(&host).expect("config text");
        assert!(
            !text.contains("jwt_secret") && !text.contains("key ="),
            "no secret in the file"
        );
    }
}

#[test]
fn promtool_accepts_the_prometheus_config_and_it_scrapes_every_node() {
    let out = Command::new("promtool")
        .args(["check", "config"])
        .arg(root().join("prometheus/prometheus.yml"))
        .output()
        .expect("promtool must be installed (scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = std::fs::read_to_string(root().join("prometheus/prometheus.yml")).expect("read");
    for n in ["node1:8080", "node2:8080", "node3:8080"] {
        assert!(text.contains(n), "scrapes {n}");
    }
}

#[test]
fn dashboard_shows_connections_rates_latency_broker_slow_consumers_api_errors() {
    let text = std::fs::read_to_string(root().join("grafana/dashboards/switchyard.json"))
        .expect("dashboard");
    let d: serde_json::Value = serde_json::from_str(&text).expect("dashboard JSON");
    let exprs: Vec<String> = d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_owned))
        .collect();
    let all = exprs.join("\n");
    for metric in [
        switchyard::metrics::CONNECTIONS,
        switchyard::metrics::MESSAGES_OUT,
        switchyard::metrics::PUBLICATIONS,
        switchyard::metrics::DELIVERY_LATENCY,
        switchyard::metrics::BROKER_UP,
        switchyard::metrics::BROKER_RECONNECTS,
        switchyard::metrics::SLOW_CONSUMERS,
        switchyard::metrics::API_REQUESTS,
    ] {
        assert!(all.contains(metric), "dashboard shows {metric}");
    }
    assert!(all.contains("status=~\"4..|5..\""), "API errors panel");
    let provisioning =
        std::fs::read_to_string(root().join("grafana/provisioning/datasources/prometheus.yml"))
            .expect("datasource");
    assert!(provisioning.contains("http://prometheus:9090"));
}
