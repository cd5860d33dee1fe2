//! The Helm chart in `charts/fanout`. No helm binary runs here, so these tests check what can be
//! checked without rendering: every value is documented and used, templates read only values
//! that exist, the defaults agree with the operator's and the worker's, the programs accept the
//! flags and environment the chart passes, and the template syntax is balanced.
//! (That the chart's CRDs equal `crds/` is checked in `crds.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use fanout_operator::crd::{
    AnnouncedAddressSource, DEFAULT_CAPACITY, DEFAULT_DRAIN_TIMEOUT_SECONDS, DEFAULT_HTTP_PORT, DEFAULT_RECORDING_PATH,
    DEFAULT_REPLICAS, DEFAULT_RTC_PORTS,
};
use fanout_operator::pod::WORKER_COMMAND;
use fanout_operator::scheduler::Policy;
use serde_json::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn chart() -> PathBuf {
    repo().join("charts/fanout")
}

fn read(path: impl AsRef<Path>) -> String {
    let path = path.as_ref();
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn yaml(path: impl AsRef<Path>) -> Value {
    let path = path.as_ref();
    yaml_serde::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn values_text() -> String {
    read(chart().join("values.yaml"))
}

fn values() -> Value {
    yaml(chart().join("values.yaml"))
}

/// Every file under `templates/`, by name, helpers and NOTES.txt included.
fn templates() -> BTreeMap<String, String> {
    let dir = chart().join("templates");
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_file() {
            files.insert(path.file_name().unwrap().to_string_lossy().into_owned(), read(&path));
        }
    }
    assert!(files.len() > 5, "charts/fanout/templates holds only {files:?}");
    files
}

/// Dotted paths of every mapping key in `values`, mapped to whether the key is a leaf (its value
/// is not a non-empty mapping). Sequences are data: their items are not walked.
fn key_paths(values: &Value) -> BTreeMap<String, bool> {
    fn walk(node: &Value, prefix: &str, out: &mut BTreeMap<String, bool>) {
        let Some(map) = node.as_object() else { return };
        for (key, value) in map {
            let path = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
            let leaf = value.as_object().is_none_or(|m| m.is_empty());
            out.insert(path.clone(), leaf);
            walk(value, &path, out);
        }
    }
    let mut out = BTreeMap::new();
    walk(values, "", &mut out);
    out
}

/// Every `.Values.a.b.c` the templates read, as `a.b.c`.
fn references(templates: &BTreeMap<String, String>) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for text in templates.values() {
        for (at, _) in text.match_indices(".Values.") {
            let rest = &text[at + ".Values.".len()..];
            let end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.')).unwrap_or(rest.len());
            let path = rest[..end].trim_end_matches('.');
            if !path.is_empty() {
                refs.insert(path.to_string());
            }
        }
    }
    refs
}

fn is_within(path: &str, ancestor: &str) -> bool {
    path.strip_prefix(ancestor).is_some_and(|rest| rest.starts_with('.'))
}

/// The line (0-based) of each mapping key of values.yaml, found by indentation. Keys inside
/// sequence items and block scalars are skipped, as `key_paths` skips them.
fn key_lines(text: &str) -> BTreeMap<String, usize> {
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut skip_deeper_than: Option<usize> = None;
    let mut lines = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if let Some(owner) = skip_deeper_than {
            if indent > owner || (indent == owner && trimmed.starts_with('-')) {
                continue;
            }
            skip_deeper_than = None;
        }
        if trimmed.starts_with('-') {
            // A block sequence: it belongs to the key above it.
            skip_deeper_than = Some(stack.last().map_or(0, |(i, _)| *i));
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            panic!("values.yaml line {}: expected `key: value`, found {line:?}", n + 1);
        };
        let key = key.trim().trim_matches('"').trim_matches('\'').to_string();
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path = stack.iter().map(|(_, k)| k.as_str()).chain([key.as_str()]).collect::<Vec<_>>().join(".");
        lines.insert(path, n);
        let value = rest.split(" #").next().unwrap().trim();
        if value.starts_with('|') || value.starts_with('>') {
            skip_deeper_than = Some(indent);
        }
        stack.push((indent, key));
    }
    lines
}

#[test]
fn every_value_has_a_comment_directly_above_it() {
    let text = values_text();
    let paths = key_paths(&values());
    let lines = key_lines(&text);
    // The line scan must see exactly the keys the YAML parser sees, or the check below means nothing.
    assert_eq!(
        lines.keys().collect::<BTreeSet<_>>(),
        paths.keys().collect::<BTreeSet<_>>(),
        "values.yaml: the line scan and the YAML parser disagree about its keys"
    );
    // A value a template passes on whole (`toYaml .Values.x.resources`) is documented as a whole:
    // the keys inside it are data (a resources block, annotations), not settings of the chart.
    let refs = references(&templates());
    let source: Vec<&str> = text.lines().collect();
    let undocumented: Vec<String> = lines
        .iter()
        .filter(|(path, _)| !refs.iter().any(|r| is_within(path, r)))
        .filter(|(_, n)| **n == 0 || !source[**n - 1].trim_start().starts_with('#'))
        .map(|(path, n)| format!("{path} (line {})", n + 1))
        .collect();
    assert!(undocumented.is_empty(), "values.yaml keys without a comment line directly above: {undocumented:?}");
}

#[test]
fn every_value_is_used_by_a_template() {
    let refs = references(&templates());
    let unused: Vec<String> = key_paths(&values())
        .into_iter()
        .filter(|(_, leaf)| *leaf)
        .map(|(path, _)| path)
        // Read itself, or passed on as part of a whole (`toYaml .Values.x.resources`).
        .filter(|path| !refs.iter().any(|r| r == path || is_within(path, r)))
        .collect();
    assert!(unused.is_empty(), "values.yaml keys no template reads: {unused:?}");
}

#[test]
fn templates_read_only_values_that_exist() {
    let values = values();
    let missing: Vec<String> = references(&templates())
        .into_iter()
        .filter(|path| path.split('.').try_fold(&values, |node, key| node.get(key)).is_none())
        .collect();
    assert!(missing.is_empty(), "templates read values that values.yaml does not have: {missing:?}");
}

#[test]
fn default_worker_pool_matches_the_operator_and_worker_defaults() {
    let values = values();
    let pool = &values["sfuWorker"];
    let int = |v: &Value| v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}"));

    // The operator's SfuWorker defaults are the worker binary's defaults...
    assert_eq!(DEFAULT_HTTP_PORT, i32::from(fanout_worker::defaults::HTTP_PORT));
    assert_eq!(DEFAULT_RTC_PORTS.min, i32::from(fanout_worker::defaults::RTC_MIN_PORT));
    assert_eq!(DEFAULT_RTC_PORTS.max, i32::from(fanout_worker::defaults::RTC_MAX_PORT));
    // ...and the chart's default pool is an SfuWorker with the defaults.
    assert_eq!(int(&pool["httpPort"]), i64::from(DEFAULT_HTTP_PORT), "sfuWorker.httpPort");
    assert_eq!(int(&pool["rtcPorts"]["min"]), i64::from(DEFAULT_RTC_PORTS.min), "sfuWorker.rtcPorts.min");
    assert_eq!(int(&pool["rtcPorts"]["max"]), i64::from(DEFAULT_RTC_PORTS.max), "sfuWorker.rtcPorts.max");
    assert_eq!(int(&pool["capacity"]["maxPeers"]), i64::from(DEFAULT_CAPACITY.max_peers), "sfuWorker.capacity.maxPeers");
    assert_eq!(int(&pool["capacity"]["maxRooms"]), i64::from(DEFAULT_CAPACITY.max_rooms), "sfuWorker.capacity.maxRooms");
    assert_eq!(int(&pool["replicas"]), i64::from(DEFAULT_REPLICAS), "sfuWorker.replicas");
    assert_eq!(int(&pool["drainTimeoutSeconds"]), DEFAULT_DRAIN_TIMEOUT_SECONDS, "sfuWorker.drainTimeoutSeconds");
    assert_eq!(pool["recording"]["path"].as_str(), Some(DEFAULT_RECORDING_PATH), "sfuWorker.recording.path");
    let source: AnnouncedAddressSource = serde_json::from_value(pool["announcedAddress"]["source"].clone())
        .expect("sfuWorker.announcedAddress.source is one of NodeIP, NodeExternalIP, Fixed");
    assert_eq!(source, AnnouncedAddressSource::default(), "sfuWorker.announcedAddress.source");

    let policy = values["operator"]["schedulingPolicy"].as_str().unwrap();
    assert!(
        <Policy as clap::ValueEnum>::from_str(policy, false).is_ok(),
        "operator.schedulingPolicy {policy:?} is not a policy the operator knows"
    );
}

#[test]
fn image_is_the_one_the_dockerfile_and_readme_build() {
    let values = values();
    let repository = values["image"]["repository"].as_str().unwrap();
    let chart_yaml = yaml(chart().join("Chart.yaml"));
    let app_version = chart_yaml["appVersion"].as_str().expect("Chart.yaml has an appVersion");
    assert_eq!(app_version, env!("CARGO_PKG_VERSION"), "Chart.yaml appVersion is the workspace version");
    assert_eq!(chart_yaml["name"], "fanout");

    let build = format!("docker build -t {repository}:{app_version} .");
    assert!(read(repo().join("Dockerfile")).contains(&build), "the Dockerfile does not say `{build}`");
    assert!(read(repo().join("README.md")).contains(&build), "README.md does not say `{build}`");
    let example = yaml(repo().join("crds/examples/sfuworker.yaml"));
    let image = example["spec"]["image"].as_str().unwrap();
    assert!(image.starts_with(&format!("{repository}:")), "crds/examples/sfuworker.yaml uses {image}, not {repository}");
}

/// The `[[bin]]` names in a crate's Cargo.toml (just enough TOML for that).
fn binaries(krate: &str) -> Vec<String> {
    let mut bins = Vec::new();
    let mut in_bin = false;
    for line in read(repo().join(krate).join("Cargo.toml")).lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
        } else if in_bin && let Some(name) = line.strip_prefix("name").and_then(|r| r.trim().strip_prefix('=')) {
            bins.push(name.trim().trim_matches('"').to_string());
        }
    }
    bins
}

#[test]
fn the_image_carries_every_program_the_chart_and_the_operator_run() {
    let dockerfile = read(repo().join("Dockerfile"));
    let templates = templates();
    let programs = [
        ("operator", "fanout-operator", "operator-deployment.yaml"),
        ("signalling", "fanout-signalling", "signalling-deployment.yaml"),
        ("worker", WORKER_COMMAND, ""),
    ];
    for (krate, program, template) in programs {
        assert!(binaries(krate).iter().any(|b| b == program), "{krate}/Cargo.toml has no binary {program}");
        assert!(dockerfile.contains(&format!("--bin {program}")), "the Dockerfile does not build {program}");
        assert!(dockerfile.contains(&format!("target/release/{program}")), "the Dockerfile does not copy {program}");
        if !template.is_empty() {
            let command = format!("command: [\"{program}\"]");
            assert!(templates[template].contains(&command), "{template} does not run {program}");
        }
    }
    let demo = values()["signalling"]["demoPage"]["path"].as_str().unwrap().to_string();
    assert!(
        dockerfile.contains(&format!("COPY --from=web /src/web/dist/ {demo}/")),
        "the Dockerfile does not put the web client where signalling.demoPage.path says ({demo})"
    );
}

#[test]
fn flags_and_environment_the_chart_passes_exist_in_the_programs() {
    let templates = templates();
    for (prefix, main) in [("operator-", "operator/src/main.rs"), ("signalling-", "signalling/src/main.rs")] {
        let source = read(repo().join(main));
        for (file, text) in templates.iter().filter(|(name, _)| name.starts_with(prefix)) {
            for line in text.lines().map(str::trim) {
                if let Some(flag) = line.strip_prefix("- --") {
                    let name = flag.split(['=', ' ']).next().unwrap().replace('-', "_");
                    assert!(
                        source.contains(&format!("    {name}: ")),
                        "{file} passes --{flag}, which {main} does not define"
                    );
                }
                if let Some(var) = line.strip_prefix("- name: ")
                    && var.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
                {
                    // tracing-subscriber's filter reads RUST_LOG, in the program or in the shared
                    // log set-up (fanout_worker::logging) it calls.
                    let reads_rust_log = source.contains("EnvFilter::try_from_default_env")
                        || (source.contains("fanout_worker::logging::init")
                            && read(repo().join("worker/src/logging.rs")).contains("EnvFilter::try_from_default_env"));
                    let known = source.contains(&format!("env = \"{var}\"")) || (var == "RUST_LOG" && reads_rust_log);
                    assert!(known, "{file} sets {var}, which {main} does not read");
                }
            }
        }
    }
}

#[test]
fn template_actions_and_blocks_are_balanced() {
    for (file, text) in templates() {
        let mut blocks: Vec<&str> = Vec::new();
        let mut rest = text.as_str();
        let mut line = 1;
        while let Some(open) = rest.find("{{") {
            let before = &rest[..open];
            assert!(!before.contains("}}"), "{file}:{line}: `}}}}` without `{{{{`");
            line += before.matches('\n').count();
            let after = &rest[open + 2..];
            let close = after.find("}}").unwrap_or_else(|| panic!("{file}:{line}: `{{{{` is never closed"));
            let action = &after[..close];
            assert!(!action.contains("{{"), "{file}:{line}: `{{{{` inside an action");
            // Trim markers need a space: `{{-3}}` is the number -3, not a trimmed 3.
            if let Some(body) = action.strip_prefix('-') {
                assert!(body.starts_with(char::is_whitespace), "{file}:{line}: `{{{{-` needs a space after it");
            }
            if let Some(body) = action.strip_suffix('-') {
                assert!(body.ends_with(char::is_whitespace), "{file}:{line}: `-}}}}` needs a space before it");
            }
            let body = action.trim_start_matches('-').trim_end_matches('-').trim();
            if body.starts_with("/*") {
                assert!(body.ends_with("*/"), "{file}:{line}: a comment must end with `*/` right before `}}}}`");
            } else {
                match body.split_whitespace().next().unwrap_or("") {
                    keyword @ ("if" | "with" | "range" | "define" | "block") => blocks.push(keyword),
                    "else" => assert!(
                        matches!(blocks.last(), Some(&("if" | "with" | "range"))),
                        "{file}:{line}: `else` outside if/with/range"
                    ),
                    "end" => {
                        assert!(blocks.pop().is_some(), "{file}:{line}: `end` without an open block");
                    }
                    _ => {}
                }
            }
            line += action.matches('\n').count();
            rest = &after[close + 2..];
        }
        assert!(!rest.contains("}}"), "{file}: `}}}}` without `{{{{` after the last action");
        assert!(blocks.is_empty(), "{file}: blocks never closed: {blocks:?}");
    }
}

/// The quoted names after `keyword` (`define "fanout.name"` gives `fanout.name`).
fn names_after<'a>(text: &'a str, keyword: &str) -> Vec<&'a str> {
    let needle = format!("{keyword} \"");
    text.match_indices(&needle)
        .map(|(at, _)| {
            let rest = &text[at + needle.len()..];
            &rest[..rest.find('"').expect("closing quote")]
        })
        .collect()
}

#[test]
fn every_included_helper_is_defined_once_in_helpers() {
    let templates = templates();
    let helpers = templates.get("_helpers.tpl").expect("templates/_helpers.tpl exists");
    let defined = names_after(helpers, "define");
    let unique: BTreeSet<&str> = defined.iter().copied().collect();
    assert_eq!(unique.len(), defined.len(), "a helper is defined twice: {defined:?}");
    for (file, text) in &templates {
        if file != "_helpers.tpl" {
            assert!(names_after(text, "define").is_empty(), "{file}: keep helpers in _helpers.tpl");
        }
        for name in names_after(text, "include").into_iter().chain(names_after(text, "template")) {
            assert!(unique.contains(name), "{file} includes {name:?}, which _helpers.tpl does not define");
        }
    }
    for name in &unique {
        let used = templates.values().any(|t| t.contains(&format!("include \"{name}\"")));
        assert!(used, "_helpers.tpl defines {name:?}, which nothing includes");
    }
}

#[test]
fn notes_tell_how_to_create_a_room_and_open_the_demo_page() {
    let notes = read(chart().join("templates/NOTES.txt"));
    assert!(notes.contains("kind: Room"), "NOTES.txt shows no Room");
    assert!(notes.contains("port-forward"), "NOTES.txt does not say how to reach signalling");
    assert!(notes.contains("?room=demo&token="), "NOTES.txt does not say how to open the demo page");
}

#[test]
fn signalling_runs_two_replicas_on_redis_by_default() {
    let values = values();
    let signalling = &values["signalling"];
    assert!(signalling["replicas"].as_i64().unwrap() >= 2, "signalling.replicas");
    assert_eq!(values["redis"]["bundled"]["enabled"].as_bool(), Some(true), "redis.bundled.enabled");
    assert_eq!(values["redis"]["bundled"]["image"]["repository"].as_str(), Some("redis"));
    assert_eq!(values["redis"]["bundled"]["image"]["tag"].as_str(), Some("7-alpine"));
    assert!(values["redis"]["bundled"]["resources"]["limits"]["memory"].is_string());
    // Long polling needs every request of a session at the same replica: the Service keeps a
    // client on one pod, the Ingress (ingress-nginx) by cookie.
    assert_eq!(signalling["service"]["sessionAffinity"].as_str(), Some("ClientIP"));
    let annotations = &signalling["ingress"]["annotations"];
    assert_eq!(annotations["nginx.ingress.kubernetes.io/affinity"].as_str(), Some("cookie"));
    assert_eq!(signalling["podDisruptionBudget"]["enabled"].as_bool(), Some(true));
    // Signalling is handed the Redis and reads it.
    let deployment = &templates()["signalling-deployment.yaml"];
    assert!(deployment.contains("- name: FANOUT_REDIS_URL"));
    assert!(read(repo().join("signalling/src/main.rs")).contains("env = \"FANOUT_REDIS_URL\""));
}
