//! The deployment files, checked with real tools: `docker-compose.yml` (PyYAML, and Debian's
//! docker-compose validating it against the Compose file schema), the `Dockerfile`
//! (BuildKit's parser, hadolint, and its health-check script run against the real admin
//! router), and the Helm chart in `helm/notification` (Helm v4's engine through
//! helm-python-sdk: lint, `values.schema.json`, rendering with the default and a
//! production-like values file; the manifests validated against the Kubernetes API schemas
//! by kubernetes-validate; `values.yaml` also by Python's jsonschema). Every environment
//! variable they set must be one the binaries accept, as their own `--help` lists them.
//!
//! `tests/deploy/check.py` runs the Python tools and prints what they found; `.ci/run`
//! installs them in `target/deploy-venv` (`DEPLOY_VENV` overrides) and docker-compose
//! (`DOCKER_COMPOSE_BIN` overrides). The binaries are the ones `cargo test --workspace`
//! builds beside this test.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};

use serde_json::{Value, json};
use shared::event::EventKind;
use tokio_util::sync::CancellationToken;

#[path = "../deploy/harness.rs"]
mod harness;

use harness::{
    Program, assert_accepted, compose_env, find, is_one_shot, kinds, repo, strs, waits_on,
};

/// The chart's `kubeVersion` floor and the newest Kubernetes the validator knows.
const KUBE_VERSIONS: [&str; 2] = ["1.25.0", "1.37.0"];
const PRODUCTION_VALUES: &str = "helm/notification/ci/production-values.yaml";
/// The gateway's drain after SIGTERM (`SHUTDOWN_DEADLINE` in bins/gateway/src/lib.rs).
const GATEWAY_DRAIN_SECS: i64 = 10;

static REPORT: LazyLock<Value> = LazyLock::new(run_check);

/// Runs `tests/deploy/check.py` once with the renders every test asserts on.
fn run_check() -> Value {
    let cases = json!({
        "kube_versions": KUBE_VERSIONS,
        "renders": {
            "default": {},
            "production": {"values_files": [PRODUCTION_VALUES]},
            "fixed_gateway_replicas": {"values": {"gateway": {"autoscaling": {"enabled": false}, "replicas": 4}}},
            "replicas_over_partitions": {"values": {"ingest": {"replicas": 7}}},
            "store_parallelism_over_pool": {"values": {"ingest": {"storeParallelism": 11}}},
            "ingest_grace_too_short": {"values": {"ingest": {"terminationGracePeriodSeconds": 40}}},
            "gateway_grace_too_short": {"values": {"gateway": {"terminationGracePeriodSeconds": 15}}},
            "misspelt_key": {"values": {"gateway": {"replica": 3}}},
            "short_jwt_secret": {"values": {"secret": {"jwtKeys": "k1=shorter-than-32-bytes"}}},
            "redis_cluster": {"values": {
                "redis": {"clusterNodes": "redis-0.redis:6379,redis-1.redis:6379,redis-2.redis:6379"},
                "gateway": {"trustedProxies": "10.0.0.0/8, 192.168.0.0/16"}
            }},
            "redis_cluster_twice": {"values": {
                "redis": {"clusterNodes": "redis-0.redis:6379"},
                "secret": {"redisClusterNodes": "redis://:pw@redis-0.redis:6379"}
            }},
            "redis_cluster_pattern": {"values": {
                "redis": {"clusterNodes": "redis-0.redis:6379"},
                "gateway": {"env": {"REDIS_SUBSCRIBE": "pattern"}}
            }},
        }
    });
    harness::run_check(&cases)
}

fn compose() -> &'static serde_json::Map<String, Value> {
    REPORT["compose"]["services"].as_object().unwrap()
}

fn render(name: &str) -> &'static Value {
    &REPORT["renders"][name]
}

/// A render that succeeded: no template error, no lint error, valid Kubernetes objects.
fn manifests(name: &str) -> Vec<&'static Value> {
    let render = render(name);
    assert_eq!(render["error"], Value::Null, "render {name}");
    assert_eq!(render["lint_errors"], json!([]), "helm lint of {name}");
    assert_eq!(
        render["python_schema_errors"],
        json!([]),
        "schema of {name}"
    );
    assert_eq!(
        render["kube_errors"],
        json!([]),
        "Kubernetes schemas, {name}"
    );
    render["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["doc"])
        .collect()
}

#[test]
fn compose_file_is_valid_and_every_service_is_healthy_or_a_one_shot_others_wait_for() {
    let bin = std::env::var("DOCKER_COMPOSE_BIN").unwrap_or_else(|_| "docker-compose".into());
    let output = Command::new(&bin)
        .arg("--file")
        .arg(repo().join("docker-compose.yml"))
        .args(["config", "--quiet"])
        .output()
        .unwrap_or_else(|e| panic!("{bin}: {e} (run .ci/run, see README, Testing)"));
    assert!(
        output.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let services = compose();
    for (name, service) in services {
        let waited_for_completion = services.values().any(|other| {
            waits_on(other).get(name).map(String::as_str) == Some("service_completed_successfully")
        });
        if is_one_shot(service) {
            assert!(
                waited_for_completion,
                "one-shot {name} is waited for by no service"
            );
        } else {
            let test = strs(&service["healthcheck"]["test"]);
            assert!(
                !test.is_empty() && test[0] != "NONE",
                "{name} has no health check and is no one-shot"
            );
        }
        for (target, condition) in waits_on(service) {
            let target_service = &services[&target];
            match condition.as_str() {
                "service_healthy" => assert!(
                    target_service["healthcheck"]["test"].is_array(),
                    "{name} waits for {target} to be healthy, which has no health check"
                ),
                "service_completed_successfully" => assert!(
                    is_one_shot(target_service),
                    "{name} waits for {target} to complete, which is no one-shot"
                ),
                other => panic!("{name} waits for {target} with condition {other}"),
            }
        }
    }

    // The binaries' health checks ask their admin listener's /readyz, on the port they bind.
    for (name, default_port) in [("ingest", "9091"), ("gateway", "9092")] {
        let service = &services[name];
        let test = strs(&service["healthcheck"]["test"]);
        let port = compose_env(service)
            .get("ADMIN_ADDR")
            .map_or(default_port.to_owned(), |a| {
                a.rsplit(':').next().unwrap().to_owned()
            });
        assert_eq!(
            test,
            ["CMD", "healthcheck", port.as_str(), "/readyz"],
            "{name}"
        );
    }
}

#[test]
fn compose_creates_the_input_topics_and_migrates_before_ingest_and_gateway_start() {
    let services = compose();
    let topics = &services["kafka-topics"];
    assert!(is_one_shot(topics));
    let listed: BTreeSet<String> = compose_env(topics)["TOPICS"]
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let expected: BTreeSet<String> = EventKind::ALL
        .iter()
        .map(|k| k.default_topic().to_owned())
        .collect();
    assert_eq!(listed, expected);
    assert!(
        strs(&topics["command"])
            .concat()
            .contains("kafka-topics.sh")
    );

    assert_eq!(strs(&services["migrate"]["command"]), ["ingest", "migrate"]);
    for name in ["ingest", "gateway"] {
        let waits = waits_on(&services[name]);
        assert_eq!(waits["migrate"], "service_completed_successfully", "{name}");
        assert_eq!(waits["redis"], "service_healthy", "{name}");
    }
    assert_eq!(
        waits_on(&services["ingest"])["kafka-topics"],
        "service_completed_successfully"
    );
    // The dev JWT key is marked as such and long enough for the gateway (32+ bytes).
    let jwt = &compose_env(&services["gateway"])["JWT_KEYS"];
    let (_, secret) = jwt.split_once('=').unwrap();
    assert!(secret.contains("DEV-ONLY") && secret.len() >= 32, "{jwt}");
}

#[test]
fn dockerfile_builds_both_binaries_in_release_into_a_slim_image_run_as_a_non_root_user() {
    let report = &REPORT["dockerfile"];
    assert_eq!(
        report["hadolint"]["code"], 0,
        "hadolint: {}",
        report["hadolint"]["output"]
    );
    let instructions = report["instructions"].as_array().unwrap();
    let stages: Vec<&Value> = instructions.iter().filter(|i| i["cmd"] == "FROM").collect();
    assert!(stages.len() >= 2, "multi-stage");
    let runtime = strs(&stages.last().unwrap()["value"]).join(" ");
    assert!(
        runtime.starts_with("debian:") && runtime.contains("-slim"),
        "{runtime}"
    );
    let build = instructions
        .iter()
        .filter(|i| i["cmd"] == "RUN")
        .map(|i| strs(&i["value"]).join(" "))
        .find(|run| run.contains("cargo build"))
        .expect("a cargo build");
    for part in ["--release", "--locked", "-p ingest", "-p gateway"] {
        assert!(build.contains(part), "{build} lacks {part}");
    }
    let user = instructions
        .iter()
        .rev()
        .find(|i| i["cmd"] == "USER")
        .map(|i| strs(&i["value"]).join(""))
        .expect("a USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric uid");
    assert!(uid > 0, "runs as root");

    // The build context (.dockerignore's allow-list) holds what `cargo build --locked`
    // reads: the workspace manifest and lock file, the migrations, and every member's
    // manifest and library and binary sources (cargo loads all members).
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let lines: Vec<&str> = ignore.lines().map(str::trim).collect();
    assert_eq!(
        lines.iter().find(|l| !l.is_empty() && !l.starts_with('#')),
        Some(&"*")
    );
    let allowed: Vec<&str> = lines.iter().filter_map(|l| l.strip_prefix('!')).collect();
    let in_context = |path: &str| {
        allowed
            .iter()
            .any(|a| path == *a || path.starts_with(&format!("{a}/")))
    };
    let output = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--manifest-path",
        ])
        .arg(repo().join("Cargo.toml"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let metadata: Value = serde_json::from_slice(&output.stdout).unwrap();
    let root = format!("{}/", repo().canonicalize().unwrap().display());
    let mut needed = vec![
        "Cargo.toml".to_owned(),
        "Cargo.lock".to_owned(),
        "migrations".to_owned(),
    ];
    for package in metadata["packages"].as_array().unwrap() {
        needed.push(package["manifest_path"].as_str().unwrap().to_owned());
        for target in package["targets"].as_array().unwrap() {
            if strs(&target["kind"])
                .iter()
                .any(|k| k == "lib" || k == "bin")
            {
                needed.push(target["src_path"].as_str().unwrap().to_owned());
            }
        }
    }
    for path in needed {
        let relative = path.strip_prefix(&root).unwrap_or(&path);
        assert!(
            in_context(relative),
            "{relative} is not in the image's build context"
        );
    }
}

#[tokio::test]
async fn the_image_healthcheck_passes_only_when_the_admin_listener_answers_200() {
    let script = REPORT["dockerfile"]["instructions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            i["cmd"] == "COPY"
                && strs(&i["value"]).last().map(String::as_str)
                    == Some("/usr/local/bin/healthcheck")
        })
        .map(|i| i["heredocs"][0]["content"].as_str().unwrap().to_owned())
        .expect("the healthcheck script");
    let path = std::env::temp_dir().join(format!("healthcheck-{}", std::process::id()));
    std::fs::write(&path, script).unwrap();

    let ready = Arc::new(AtomicBool::new(true));
    let flag = ready.clone();
    let router = shared::admin::router(String::new, move || {
        if flag.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("redis unreachable".to_owned())
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(shared::admin::serve(listener, router, shutdown.clone()));
    let check = |port: &str, path_arg: Option<&str>| {
        let mut command = tokio::process::Command::new("bash");
        command.arg(&path).arg(port).stderr(Stdio::null());
        command.args(path_arg);
        async move { command.status().await.unwrap().success() }
    };

    assert!(check(&port, None).await, "/readyz answers 200");
    assert!(check(&port, Some("/healthz")).await);
    ready.store(false, Ordering::Relaxed);
    assert!(!check(&port, None).await, "/readyz answers 503");
    assert!(check(&port, Some("/healthz")).await);
    assert!(!check(&port, Some("/nowhere")).await, "404");
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(!check(&port, None).await, "nothing listens");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn chart_and_default_values_validate_against_the_values_schema() {
    let chart = &REPORT["chart_yaml"];
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "notification");
    assert_eq!(REPORT["chart_metadata"]["name"], "notification");
    assert!(chart["version"].as_str().unwrap().split('.').count() == 3);
    assert_eq!(REPORT["values_schema_errors"], json!([]), "jsonschema");
    assert_eq!(REPORT["helm_values_schema_error"], Value::Null, "Helm");
    let values = &REPORT["values"];
    assert!(
        values["ingest"]["replicas"].as_i64() <= values["kafka"]["partitions"].as_i64(),
        "ingest replicas beyond the partitions would idle"
    );
}

/// Both workloads: probes on the admin port, a grace period longer than their shutdown.
fn assert_workloads(docs: &[&Value], values: &Value) {
    let config = |name: &str| find(docs, "ConfigMap", name)["data"].clone();
    for (component, port) in [("ingest", 9091), ("gateway", 9092)] {
        let deployment = find(docs, "Deployment", &format!("notification-{component}"));
        let pod = &deployment["spec"]["template"]["spec"];
        let container = &pod["containers"][0];
        assert!(
            pod["securityContext"]["runAsNonRoot"] == true,
            "{component}"
        );
        let admin = container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "admin")
            .unwrap();
        assert_eq!(admin["containerPort"], port, "{component}");
        assert_eq!(
            container["livenessProbe"]["httpGet"],
            json!({"path": "/healthz", "port": "admin"})
        );
        assert_eq!(
            container["readinessProbe"]["httpGet"],
            json!({"path": "/readyz", "port": "admin"})
        );
        let admin_addr = config(&format!("notification-{component}"))["ADMIN_ADDR"].clone();
        assert_eq!(admin_addr, format!("0.0.0.0:{port}"), "{component}");
        let service = find(docs, "Service", &format!("notification-{component}-admin"));
        assert_eq!(service["spec"]["ports"][0]["targetPort"], "admin");
    }

    let ingest = &find(docs, "Deployment", "notification-ingest")["spec"];
    assert!(ingest["replicas"].as_i64() <= values["kafka"]["partitions"].as_i64());
    let deadline_ms: i64 = config("notification-ingest")["SHUTDOWN_DEADLINE_MS"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let grace = ingest["template"]["spec"]["terminationGracePeriodSeconds"]
        .as_i64()
        .unwrap();
    assert!(
        grace * 1000 > 2 * deadline_ms,
        "ingest: store and publish waits fit the grace period"
    );
    let pdb = find(docs, "PodDisruptionBudget", "notification-ingest");
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        ingest["selector"]["matchLabels"]
    );

    let gateway = &find(docs, "Deployment", "notification-gateway")["spec"]["template"]["spec"];
    let sleep = strs(&gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]);
    assert_eq!(sleep[0], "sleep");
    let sleep: i64 = sleep[1].parse().unwrap();
    assert!(sleep > 0);
    let grace = gateway["terminationGracePeriodSeconds"].as_i64().unwrap();
    assert!(
        grace > sleep + GATEWAY_DRAIN_SECS,
        "gateway: preStop and drain fit the grace period"
    );
    let public = find(docs, "Service", "notification-gateway");
    assert_eq!(public["spec"]["ports"][0]["targetPort"], "http");

    let job = find(docs, "Job", "notification-migrate");
    assert_eq!(
        job["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );
    let migrate = &job["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        [strs(&migrate["command"]), strs(&migrate["args"])].concat(),
        ["ingest", "migrate"]
    );
}

/// The HPA: autoscaling/v2 on CPU and on the gateway's open sessions (a Pods metric).
fn assert_hpa(docs: &[&Value]) {
    let hpa = find(docs, "HorizontalPodAutoscaler", "notification-gateway");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    assert_eq!(
        hpa["spec"]["scaleTargetRef"]["name"],
        "notification-gateway"
    );
    let metrics = hpa["spec"]["metrics"].as_array().unwrap();
    assert!(
        metrics
            .iter()
            .any(|m| m["type"] == "Resource" && m["resource"]["name"] == "cpu")
    );
    assert!(
        metrics
            .iter()
            .any(|m| m["type"] == "Pods" && m["pods"]["metric"]["name"] == "gateway_sessions")
    );
}

#[test]
fn chart_renders_every_workload_with_the_default_values() {
    let docs = manifests("default");
    let expected: BTreeMap<String, usize> = [
        ("ConfigMap", 2),
        ("Deployment", 2),
        ("HorizontalPodAutoscaler", 1),
        ("Job", 1),
        ("PodDisruptionBudget", 2),
        ("Secret", 2),
        ("Service", 3),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_owned(), n))
    .collect();
    assert_eq!(kinds(&docs), expected);
    assert_eq!(render("default")["no_schema"], json!([]));
    assert_workloads(&docs, &REPORT["values"]);
    assert_hpa(&docs);
    // With the HPA the Deployment leaves replicas to it; the release's Secret is the one the
    // pods read, the hook Secret the one the pre-install Job reads.
    let gateway = find(&docs, "Deployment", "notification-gateway");
    assert!(gateway["spec"].get("replicas").is_none());
    let secret = find(&docs, "Secret", "notification");
    let keys: BTreeSet<&String> = secret["data"].as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        BTreeSet::from([&"DATABASE_URL".to_owned(), &"JWT_KEYS".to_owned()])
    );
    let hook = find(&docs, "Secret", "notification-migrate");
    assert_eq!(
        hook["metadata"]["annotations"]["helm.sh/hook"],
        "pre-install,pre-upgrade"
    );

    let fixed = manifests("fixed_gateway_replicas");
    assert!(!kinds(&fixed).contains_key("HorizontalPodAutoscaler"));
    assert_eq!(
        find(&fixed, "Deployment", "notification-gateway")["spec"]["replicas"],
        4
    );
}

#[test]
fn chart_renders_the_production_values_with_ingress_affinity_and_service_monitors() {
    let docs = manifests("production");
    let counts = kinds(&docs);
    for (kind, n) in [
        ("Deployment", 2),
        ("Service", 3),
        ("HorizontalPodAutoscaler", 1),
        ("PodDisruptionBudget", 2),
        ("Job", 1),
        ("ConfigMap", 2),
        ("Ingress", 1),
        ("ServiceMonitor", 2),
    ] {
        assert_eq!(counts.get(kind), Some(&n), "{kind}");
    }
    // Secrets come from the existing Secret: the chart makes none.
    assert_eq!(counts.get("Secret"), None);
    assert_eq!(
        render("production")["no_schema"],
        json!(["monitoring.coreos.com/v1/ServiceMonitor"])
    );
    let production = &REPORT["renders"]["production"];
    assert!(production["error"].is_null());
    assert_workloads(&docs, &json!({"kafka": {"partitions": 12}}));
    assert_hpa(&docs);

    for doc in &docs {
        let Some(spec) = doc["spec"]["template"]["spec"].as_object() else {
            continue;
        };
        for container in spec["containers"].as_array().unwrap() {
            for env in container["env"].as_array().into_iter().flatten() {
                if let Some(secret) = env["valueFrom"]["secretKeyRef"].as_object() {
                    assert_eq!(secret["name"], "notification-secrets", "{}", env["name"]);
                }
            }
        }
    }

    let ingress = find(&docs, "Ingress", "notification-gateway");
    let annotations = &ingress["metadata"]["annotations"];
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/affinity"],
        "cookie"
    );
    assert_eq!(
        annotations["nginx.ingress.kubernetes.io/session-cookie-name"],
        "notification-affinity"
    );
    let paths = &ingress["spec"]["rules"][0]["http"]["paths"];
    assert!(
        paths
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["path"] == "/ws/notifications")
    );
    assert_eq!(
        paths[0]["backend"]["service"]["name"],
        "notification-gateway"
    );

    for component in ["ingest", "gateway"] {
        let monitor = find(
            &docs,
            "ServiceMonitor",
            &format!("notification-{component}"),
        );
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "admin");
        assert_eq!(monitor["metadata"]["labels"]["release"], "prometheus");
        let admin = find(&docs, "Service", &format!("notification-{component}-admin"));
        for (key, value) in monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
        {
            assert_eq!(
                &admin["metadata"]["labels"][key], value,
                "{component}: {key}"
            );
        }
    }
}

#[test]
fn chart_refuses_values_that_would_deploy_a_broken_release() {
    for (case, reason) in [
        ("replicas_over_partitions", "exceeds kafka.partitions"),
        ("store_parallelism_over_pool", "exceeds its database pool"),
        (
            "ingest_grace_too_short",
            "twice ingest.shutdownDeadlineSeconds",
        ),
        ("gateway_grace_too_short", "10 s drain"),
        (
            "misspelt_key",
            "additional properties 'replica' not allowed",
        ),
        ("short_jwt_secret", "/secret/jwtKeys"),
        ("redis_cluster_twice", "not both"),
        ("redis_cluster_pattern", "has no sharded form"),
    ] {
        let error = render(case)["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{case} rendered"));
        assert!(error.contains(reason), "{case}: {error}");
    }
}

/// Every variable a pod template sets, directly or through a ConfigMap, per program.
fn pod_env(docs: &[&Value], pod: &Value) -> Vec<(Program, BTreeSet<String>)> {
    pod["containers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|container| {
            let argv = [strs(&container["command"]), strs(&container["args"])].concat();
            let mut names: BTreeSet<String> = container["env"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            for source in container["envFrom"].as_array().into_iter().flatten() {
                let map = source["configMapRef"]["name"]
                    .as_str()
                    .expect("envFrom a ConfigMap");
                names.extend(
                    find(docs, "ConfigMap", map)["data"]
                        .as_object()
                        .unwrap()
                        .keys()
                        .cloned(),
                );
            }
            (Program::of(&argv), names)
        })
        .collect()
}

#[test]
fn every_environment_variable_set_is_one_the_binaries_accept() {
    for (name, service) in compose() {
        if service["image"] != REPORT["compose"]["services"]["ingest"]["image"] {
            continue;
        }
        let program = Program::of(&strs(&service["command"]));
        let names = compose_env(service).into_keys().collect();
        assert_accepted(program, &names, &format!("docker-compose service {name}"));
    }
    let mut seen = BTreeSet::new();
    for case in [
        "default",
        "production",
        "fixed_gateway_replicas",
        "redis_cluster",
    ] {
        let docs = manifests(case);
        for doc in &docs {
            let Some(pod) = doc["spec"]["template"]["spec"].as_object() else {
                continue;
            };
            let place = format!("{case}: {} {}", doc["kind"], doc["metadata"]["name"]);
            for (program, names) in pod_env(&docs, &Value::Object(pod.clone())) {
                assert_accepted(program, &names, &place);
                seen.insert(program);
            }
        }
    }
    assert_eq!(seen.len(), 3, "ingest run, ingest migrate and gateway pods");
}

#[test]
fn chart_points_both_binaries_at_a_redis_cluster_and_trusts_the_ingress() {
    let docs = manifests("redis_cluster");
    let nodes = "redis-0.redis:6379,redis-1.redis:6379,redis-2.redis:6379";
    for component in ["ingest", "gateway"] {
        let config = find(&docs, "ConfigMap", &format!("notification-{component}"));
        assert_eq!(config["data"]["REDIS_CLUSTER_NODES"], nodes, "{component}");
    }
    let gateway = find(&docs, "ConfigMap", "notification-gateway");
    assert_eq!(
        gateway["data"]["TRUSTED_PROXIES"],
        "10.0.0.0/8, 192.168.0.0/16"
    );
    let ingest = find(&docs, "ConfigMap", "notification-ingest");
    assert!(ingest["data"].get("TRUSTED_PROXIES").is_none());
    // Without them, neither is set.
    for doc in manifests("default") {
        if doc["kind"] == "ConfigMap" {
            assert!(doc["data"].get("REDIS_CLUSTER_NODES").is_none());
            assert!(doc["data"].get("TRUSTED_PROXIES").is_none());
        }
    }
}
