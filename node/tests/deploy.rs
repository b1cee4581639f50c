//! The deployment files in `deploy/`, validated statically (Docker and Kubernetes do not run
//! here): every TOML config goes through the node's own config parser and `--check-config`'s
//! checks, the YAML manifests parse, and every `--flag` and `WK_*` variable that any file hands
//! to `wknode` exists in `wknode --help`. Cross-file facts are checked too (the bootstrap
//! members agree, each node's cluster address is its own entry, the examples mention every
//! setting).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_norway::Value;
use wknode::check;
use wknode::config::{Args, Config};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn read(rel: &str) -> String {
    let path = deploy_dir().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// What `wknode --help` offers: long flags and environment variables.
struct Help {
    flags: BTreeSet<String>,
    env: BTreeSet<String>,
}

fn help() -> Help {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_wknode"))
        .arg("--help")
        .output()
        .expect("run wknode --help");
    assert!(out.status.success(), "wknode --help failed");
    let text = String::from_utf8(out.stdout).expect("utf-8 help");
    Help {
        flags: long_flags(&text),
        env: env_vars(&text),
    }
}

/// `--some-flag` words of a text (without the dashes).
fn long_flags(text: &str) -> BTreeSet<String> {
    text.split(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '[' | ']' | ',' | '=' | '(' | ')'))
        .filter_map(|w| w.strip_prefix("--"))
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()))
        .filter(|w| {
            !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
        .map(str::to_string)
        .collect()
}

/// `WK_NAME` words of a text.
fn env_vars(text: &str) -> BTreeSet<String> {
    text.split(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
        .filter(|w| w.starts_with("WK_") && w.len() > 3)
        .map(str::to_string)
        .collect()
}

fn assert_known(help: &Help, file: &str, flags: &BTreeSet<String>, env: &BTreeSet<String>) {
    let bad_flags: Vec<_> = flags.difference(&help.flags).collect();
    assert!(
        bad_flags.is_empty(),
        "{file}: flags unknown to wknode --help: {bad_flags:?}"
    );
    let bad_env: Vec<_> = env.difference(&help.env).collect();
    assert!(
        bad_env.is_empty(),
        "{file}: variables unknown to wknode --help: {bad_env:?}"
    );
}

/// Variables an env file may set besides the node's `WK_*` ones.
const OTHER_ENV: [&str; 1] = ["RUST_LOG"];

/// The `WK_*` keys of an env file; any other key must be in `OTHER_ENV`.
fn wk_keys(file: &str, env: &BTreeMap<String, String>) -> BTreeSet<String> {
    for k in env.keys().filter(|k| !k.starts_with("WK_")) {
        assert!(OTHER_ENV.contains(&k.as_str()), "{file}: unexpected variable {k}");
    }
    env.keys().filter(|k| k.starts_with("WK_")).cloned().collect()
}

/// KEY=VALUE lines of an env file.
fn env_file(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, v) = l
                .split_once('=')
                .unwrap_or_else(|| panic!("env line {l:?} is not KEY=VALUE"));
            (k.to_string(), v.to_string())
        })
        .collect()
}

/// Every string in a YAML tree, keys included.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Sequence(seq) => seq.iter().for_each(|x| strings(x, out)),
        Value::Mapping(m) => {
            for (k, x) in m {
                strings(k, out);
                strings(x, out);
            }
        }
        Value::Tagged(t) => strings(&t.value, out),
        _ => {}
    }
}

/// All documents of a YAML file, merge keys (`<<`) applied.
fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    let text = read(rel);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{rel}: {e}"));
            // One pass merges one level: a merged mapping may itself hold a `<<` (nested anchors).
            for _ in 0..4 {
                v.apply_merge()
                    .unwrap_or_else(|e| panic!("{rel}: merge keys: {e}"));
            }
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn path<'a>(v: &'a Value, keys: &[&str]) -> &'a Value {
    keys.iter().fold(v, |v, k| {
        v.get(*k).unwrap_or_else(|| panic!("missing {k} in {keys:?}"))
    })
}

fn str_of<'a>(v: &'a Value, keys: &[&str]) -> &'a str {
    path(v, keys)
        .as_str()
        .unwrap_or_else(|| panic!("{keys:?} is not a string"))
}

#[test]
fn toml_configs_parse_and_pass_the_check() {
    let help = help();
    let secrets = env_file(&read("systemd/wknode.env.example"));
    assert_known(
        &help,
        "systemd/wknode.env.example",
        &BTreeSet::new(),
        &wk_keys("wknode.env.example", &secrets),
    );
    let secret = |k: &str| {
        Some(
            secrets
                .get(k)
                .unwrap_or_else(|| panic!("wknode.env.example lacks {k}"))
                .clone(),
        )
    };

    let mut configs = BTreeMap::new();
    let mut mentioned = String::new();
    for entry in std::fs::read_dir(deploy_dir().join("config")).expect("deploy/config") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("utf-8 name")
            .to_string();
        mentioned.push_str(&std::fs::read_to_string(&path).expect("read config"));
        // As systemd runs it: the file plus the secrets of wknode.env.
        let args = Args {
            config: Some(path.clone()),
            api_token: secret("WK_API_TOKEN"),
            admin_token: secret("WK_ADMIN_TOKEN"),
            cluster_secret: secret("WK_CLUSTER_SECRET"),
            ..Default::default()
        };
        let cfg = Config::from_args(args).unwrap_or_else(|e| panic!("{name}: {e:#}"));
        let problems = check::problems(&cfg);
        assert!(
            problems.is_empty(),
            "{name}: {problems:?}\n{}",
            check::describe(&cfg)
        );
        // Without the secrets the node must refuse: the examples serve beyond loopback.
        let bare = Config::from_args(Args {
            config: Some(path),
            ..Default::default()
        })
        .expect("parses");
        assert!(
            !check::problems(&bare).is_empty(),
            "{name}: serves beyond loopback without tokens"
        );
        configs.insert(name, cfg);
    }
    assert_eq!(
        configs.len(),
        4,
        "three bootstrap configs and one scale-out config: {:?}",
        configs.keys()
    );

    let init = configs["node1.toml"].init_nodes.clone();
    assert_eq!(init.len(), 3);
    for i in 1..=3u64 {
        let c = &configs[&format!("node{i}.toml")];
        assert_eq!(c.node_id, i);
        assert_eq!(
            c.init_nodes, init,
            "node{i}.toml: every member bootstraps from the same list"
        );
        assert_eq!(
            init.iter().find(|(id, _)| *id == i).map(|(_, a)| a.as_str()),
            Some(c.cluster_addr.as_str())
        );
        assert!(
            check::warnings(c).is_empty(),
            "node{i}.toml: {:?}",
            check::warnings(c)
        );
        assert!(check::describe(c).contains("bootstrap a new cluster of 3 nodes"));
    }
    let joiner = &configs["node4-scale-out.toml"];
    assert!(joiner.init_nodes.is_empty() && joiner.auto_join);
    let (seed_id, seed_addr) = joiner.seed.clone().expect("the scale-out config has a seed");
    assert!(
        init.contains(&(seed_id, seed_addr)),
        "the seed is a bootstrap member"
    );
    assert!(check::describe(joiner).contains("admit itself"));

    // Every setting of the node appears (set or commented) in the examples. Logging is set up
    // before the file is read, so `--log-format` is a flag/`WK_LOG_FORMAT` only; `--restore` is
    // a one-off command, like `--check-config`.
    let not_file_settings = [
        "config",
        "help",
        "version",
        "check-config",
        "restore",
        "log-format",
    ];
    for flag in help
        .flags
        .iter()
        .filter(|f| !not_file_settings.contains(&f.as_str()))
    {
        let key = flag.replace('-', "_");
        assert!(
            mentioned.contains(&format!("{key} =")),
            "no example config mentions `{key}` (--{flag})"
        );
    }
}

#[test]
fn compose_file_uses_real_flags_and_agrees_with_itself() {
    let help = help();
    let docs = yaml_docs("docker-compose.yml");
    assert_eq!(docs.len(), 1);
    let compose = &docs[0];
    let mut all = Vec::new();
    strings(compose, &mut all);
    let text = all.join("\n");
    assert_known(&help, "docker-compose.yml", &long_flags(&text), &env_vars(&text));

    let services = path(compose, &["services"])
        .as_mapping()
        .expect("services is a mapping");
    let mut init = None;
    for id in 1..=3 {
        let s = path(compose, &["services", &format!("wk{id}")]);
        assert_eq!(str_of(s, &["environment", "WK_NODE_ID"]), id.to_string());
        let cluster_addr = str_of(s, &["environment", "WK_CLUSTER_ADDR"]);
        let members = str_of(s, &["environment", "WK_INIT_NODES"]);
        assert_eq!(
            *init.get_or_insert(members),
            members,
            "wk{id}: same bootstrap members"
        );
        assert!(
            members.split(',').any(|m| m == format!("{id}@{cluster_addr}")),
            "wk{id}: {cluster_addr} is its own entry"
        );
        let ip = str_of(s, &["networks", "wukong", "ipv4_address"]);
        assert!(
            cluster_addr.starts_with(&format!("{ip}:")),
            "wk{id}: cluster address on its fixed IP"
        );
        assert!(
            str_of(s, &["environment", "WK_API_TOKEN"]).contains("WK_API_TOKEN"),
            "secrets come from .env"
        );
        assert!(path(s, &["healthcheck", "test"]).as_sequence().is_some_and(|t| {
            t.iter()
                .any(|x| x.as_str() == Some("http://127.0.0.1:5001/health"))
        }));
        assert_eq!(str_of(s, &["build", "dockerfile"]), "deploy/Dockerfile");
        let ports: Vec<&str> = path(s, &["ports"])
            .as_sequence()
            .expect("ports list")
            .iter()
            .filter_map(|p| p.as_str())
            .collect();
        for (published, advertised) in [(":5100", "WK_TCP_ADVERTISE"), (":5200", "WK_WS_ADVERTISE")] {
            let host = str_of(s, &["environment", advertised]);
            assert!(
                ports.contains(&format!("{host}{published}").as_str()),
                "wk{id}: the gateway port {published} is published where {advertised} says: {ports:?}"
            );
        }
    }
    let wk4 = path(compose, &["services", "wk4"]);
    assert_eq!(path(wk4, &["profiles"]).as_sequence().map(|p| p.len()), Some(1));
    let cmd: Vec<&str> = path(wk4, &["command"])
        .as_sequence()
        .expect("command list")
        .iter()
        .filter_map(|x| x.as_str())
        .collect();
    for want in ["--seed", "--auto-join", "--cluster-addr"] {
        assert!(cmd.contains(&want), "wk4 command lacks {want}: {cmd:?}");
    }
    assert!(
        path(wk4, &["environment"]).get("WK_INIT_NODES").is_none(),
        "a joining node does not bootstrap"
    );
    assert_eq!(services.len(), 4);
}

#[test]
fn kubernetes_manifest_parses_and_uses_real_flags() {
    let help = help();
    let docs = yaml_docs("k8s/wukong.yaml");
    let kinds: Vec<&str> = docs.iter().map(|d| str_of(d, &["kind"])).collect();
    for kind in ["Service", "StatefulSet", "PodDisruptionBudget"] {
        assert!(kinds.contains(&kind), "no {kind} in {kinds:?}");
    }
    let mut all = Vec::new();
    docs.iter().for_each(|d| strings(d, &mut all));
    let text = all.join("\n");
    assert_known(&help, "k8s/wukong.yaml", &long_flags(&text), &env_vars(&text));

    let sts = docs
        .iter()
        .find(|d| str_of(d, &["kind"]) == "StatefulSet")
        .expect("statefulset");
    let service_name = str_of(sts, &["spec", "serviceName"]);
    let headless = docs
        .iter()
        .find(|d| str_of(d, &["kind"]) == "Service" && str_of(d, &["metadata", "name"]) == service_name)
        .expect("the StatefulSet's service exists");
    assert_eq!(
        str_of(headless, &["spec", "clusterIP"]),
        "None",
        "the service is headless"
    );
    assert_eq!(
        path(headless, &["spec", "publishNotReadyAddresses"]).as_bool(),
        Some(true)
    );

    let container = &path(sts, &["spec", "template", "spec", "containers"])
        .as_sequence()
        .expect("containers")[0];
    assert_eq!(
        str_of(container, &["readinessProbe", "httpGet", "path"]),
        "/health"
    );
    let script = path(container, &["args"]).as_sequence().expect("args")[0]
        .as_str()
        .expect("script");
    for want in [
        "--auto-join",
        "--seed",
        "--cluster-addr",
        "--node-id",
        "exec /usr/local/bin/wknode",
    ] {
        assert!(script.contains(want), "the start script lacks {want}");
    }
    assert!(
        !script.replace("$$((", "").contains("$(("),
        "Kubernetes expands $(...): write $$((...))"
    );
    let security = path(sts, &["spec", "template", "spec", "securityContext"]);
    assert_eq!(path(security, &["runAsNonRoot"]).as_bool(), Some(true));
    let env: Vec<&str> = path(container, &["env"])
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| str_of(e, &["name"]))
        .collect();
    for want in [
        "WK_API_TOKEN",
        "WK_ADMIN_TOKEN",
        "WK_CLUSTER_SECRET",
        "WK_HTTP_ADDR",
        "WK_DATA_DIR",
    ] {
        assert!(env.contains(&want), "container env lacks {want}");
    }
}

#[test]
fn dockerfile_and_systemd_unit_are_sane() {
    let help = help();
    let dockerfile = read("Dockerfile");
    assert_known(&help, "Dockerfile", &BTreeSet::new(), &env_vars(&dockerfile));
    let stages = dockerfile.lines().filter(|l| l.starts_with("FROM ")).count();
    assert!(stages >= 2, "multi-stage build");
    let user = dockerfile
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("a USER line");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "runs as non-root, not {user}"
    );
    assert!(
        dockerfile
            .lines()
            .any(|l| l.starts_with("ENTRYPOINT") && l.contains("wknode"))
    );

    let unit = read("systemd/wknode.service");
    let exec: Vec<&str> = unit.lines().filter(|l| l.starts_with("ExecStart")).collect();
    assert_eq!(exec.len(), 1);
    assert_known(
        &help,
        "systemd/wknode.service",
        &long_flags(exec[0]),
        &env_vars(&unit),
    );
    for want in [
        "User=wukong",
        "LimitNOFILE=",
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "StateDirectory=wukong",
    ] {
        assert!(unit.lines().any(|l| l.starts_with(want)), "the unit lacks {want}");
    }
    let compose_env = env_file(&read("compose.env.example"));
    assert_known(
        &help,
        "compose.env.example",
        &BTreeSet::new(),
        &wk_keys("compose.env.example", &compose_env),
    );
}

#[test]
fn grafana_dashboard_is_valid_json_with_queries() {
    let dash: serde_json::Value =
        serde_json::from_str(&read("grafana/wukong-dashboard.json")).expect("dashboard JSON");
    let panels = dash["panels"].as_array().expect("panels");
    let exprs: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .map(|t| t["expr"].as_str().expect("every target has an expr"))
        .collect();
    assert!(exprs.len() >= 10, "a dashboard worth the name");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(
            ids.insert(p["id"].as_u64().expect("panel id")),
            "panel ids are unique"
        );
    }
    for e in exprs {
        assert_eq!(e.matches('(').count(), e.matches(')').count(), "unbalanced: {e}");
        assert_eq!(e.matches('{').count(), e.matches('}').count(), "unbalanced: {e}");
    }
}
