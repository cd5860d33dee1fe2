//! Failure drills through the operator, with real browsers: the real API server, the real
//! `fanout-operator`, `fanout-worker` processes for the pods (the test plays kubelet), the real
//! `fanout-signalling` in Kubernetes placement, and Chromium on the demo page
//! (`web/testing/call-agent.mjs`). Two rooms, a call of two in each, on different workers; one
//! worker goes away mid-call and the test asserts that its room's browsers are told, rejoin and
//! republish by themselves and decode each other again on the other worker, and that the other
//! room's browsers never rejoin and never stall. The disruption is printed as figures.
//!
//! - A worker process SIGKILLed and its pod NotReady (a crashed worker whose readiness probe
//!   fails): the operator moves its rooms after its reschedule grace; signalling tells the
//!   room's sockets `room-migrated`.
//! - The pool scaled down while a call runs: the draining worker takes no new rooms; at its
//!   drain timeout the pod is deleted, its worker gets SIGTERM and puts its peers out with
//!   `WORKER_SHUTDOWN`, the operator places the room on the remaining worker, and the browsers'
//!   rejoin (retrying while the room moves) lands there.
//!
//! And one that is no failure: a `Recording` applied to a room with a call of two, stopped
//! with `spec.stop` ten seconds later; the pod's recording volume then holds a WebM file per
//! camera and microphone that ffprobe reads at the recorded length and ffmpeg decodes cleanly.
//!
//! They need Chromium, Node.js with the web client's packages and a built demo page, and the
//! `fanout-signalling` and `fanout-worker` binaries beside this test's: `scripts/test-web.sh`
//! installs and builds those and runs them (`cargo test -p fanout-operator --test api_server
//! drills -- --ignored`); `cargo test` lists them as ignored.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fanout_operator::crd::{Room, SfuWorker};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use kube::ResourceExt;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

use crate::cluster::{cluster, eventually, Cluster, NodeInfo, WORKER_TOKEN};
use crate::kit::say;
use crate::kubelet::Kubelet;
use crate::operator::{Operator, OperatorArgs};
use crate::pools::{pool_spec, ready_pool, worker_token_secret};

const WAIT: Duration = Duration::from_secs(30);
/// Longer than this without a decoded frame is a stall.
const STALL_MS: i64 = 5000;

/// A program this test runs, found beside the test binary (`target/<profile>/`).
fn program(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile>/deps/<test>");
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: build it first (cargo build -p {name}); scripts/test-web.sh does", path.display());
    path
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

fn logs_dir(c: &Cluster) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("{}-logs", c.ns));
    std::fs::create_dir_all(&dir).expect("log folder");
    dir
}

/// `fanout-signalling` in Kubernetes placement over the test's namespace.
struct Signalling {
    child: Child,
    url: String,
    log: PathBuf,
}

impl Signalling {
    async fn start(c: &Cluster, secret: &str, logs: &Path) -> Signalling {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let log = logs.join("signalling.log");
        let out = std::fs::File::create(&log).expect("signalling log");
        let child = Command::new(program("fanout-signalling"))
            .args(["--placement", "kubernetes", "--namespace", &c.ns, "--listen-addr", "127.0.0.1", "--port", &port.to_string()])
            .args(["--placement-wait-seconds", "20"])
            .env("KUBECONFIG", &c.plane.kubeconfig)
            .env("FANOUT_JWT_SECRET", secret)
            .env("FANOUT_WORKER_TOKEN", WORKER_TOKEN)
            .env("RUST_LOG", "info,kube=warn")
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .kill_on_drop(true)
            .spawn()
            .expect("fanout-signalling starts");
        let url = format!("http://127.0.0.1:{port}");
        let client = fanout_worker::client::WorkerClient::new(None, Duration::from_secs(1));
        let mut s = Signalling { child, url, log };
        eventually("signalling answers /healthz", Duration::from_secs(60), || async {
            client.healthz(&s.url).await.ok()
        })
        .await;
        assert!(s.child.try_wait().unwrap().is_none(), "signalling exited: {}", s.tail());
        s
    }

    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }
}

/// Chromium pages in a call, driven through `web/testing/call-agent.mjs` (its header has the
/// commands).
struct Browsers {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::UnboundedReceiver<Value>,
    next: u64,
}

impl Browsers {
    async fn start(signalling: &str, secret: &str) -> Browsers {
        let web = crate::repo().join("web");
        let options = json!({"signalling": signalling, "secret": secret}).to_string();
        let mut child = Command::new("node")
            .arg("testing/call-agent.mjs")
            .arg(options)
            .current_dir(&web)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs web/testing/call-agent.mjs (Node.js installed?)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, answers) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.strip_prefix("agent: ") {
                    Some(answer) => {
                        let _ = tx.send(serde_json::from_str(answer).unwrap_or_else(|e| json!({"error": format!("{e}: {answer}")})));
                    }
                    None => say(format!("browsers: {line}")),
                }
            }
        });
        let mut browsers = Browsers { child, stdin, answers, next: 1 };
        let ready = browsers.answer(0, Duration::from_secs(120)).await;
        assert_eq!(ready["ready"], true, "{ready}");
        browsers
    }

    async fn answer(&mut self, id: u64, timeout: Duration) -> Value {
        let answer = tokio::time::timeout(timeout, async {
            loop {
                match self.answers.recv().await {
                    Some(a) if a["id"] == id => return Some(a),
                    Some(_) => continue,
                    None => return None,
                }
            }
        })
        .await;
        match answer {
            Ok(Some(a)) => a,
            Ok(None) => panic!("the browser agent exited ({:?})", self.child.try_wait()),
            Err(_) => panic!("the browser agent did not answer command {id} within {timeout:?}"),
        }
    }

    /// Runs one command; a failed one fails the test with the pages' consoles.
    async fn call(&mut self, mut command: Value, timeout: Duration) -> Value {
        let id = self.next;
        self.next += 1;
        command["id"] = json!(id);
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("the browser agent reads commands");
        let answer = self.answer(id, timeout).await;
        if let Some(error) = answer.get("error") {
            let diagnostics = self.diagnostics().await;
            panic!("browsers: {} failed: {}\n{diagnostics}", command["cmd"], error.as_str().unwrap_or_default());
        }
        answer
    }

    async fn diagnostics(&mut self) -> String {
        let id = self.next;
        self.next += 1;
        let line = format!("{}\n", json!({"id": id, "cmd": "diagnostics"}));
        if self.stdin.write_all(line.as_bytes()).await.is_err() {
            return String::new();
        }
        self.answer(id, Duration::from_secs(20)).await["text"].as_str().unwrap_or_default().to_string()
    }

    async fn open(&mut self, name: &str, room: &str) {
        self.call(json!({"cmd": "open", "name": name, "room": room}), Duration::from_secs(90)).await;
    }

    /// Waits until each viewer decodes every other participant of its pair.
    async fn receive_each_other(&mut self, a: &str, b: &str) {
        for (viewer, sender) in [(a, b), (b, a)] {
            self.call(json!({"cmd": "receives", "viewer": viewer, "senders": [sender], "timeoutMs": 45000}), Duration::from_secs(60)).await;
        }
    }

    async fn report(&mut self) -> Report {
        serde_json::from_value(self.call(json!({"cmd": "report"}), Duration::from_secs(30)).await).expect("a report")
    }

    async fn close(mut self) {
        drop(self.stdin);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

#[derive(serde::Deserialize, Debug)]
struct Report {
    progress: HashMap<String, Vec<i64>>,
    rejoins: HashMap<String, Vec<Value>>,
    ids: HashMap<String, Option<String>>,
    states: HashMap<String, Option<String>>,
    messages: HashMap<String, String>,
}

/// The longest time between two decoded-frame samples from `from` on, ms.
fn longest_gap(times: &[i64], from: i64) -> i64 {
    let after: Vec<i64> = times.iter().copied().filter(|t| *t >= from).collect();
    if after.is_empty() {
        return i64::MAX;
    }
    after.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0)
}

/// Last decoded frame before `at` to the first one after, ms.
fn disruption(times: &[i64], at: i64) -> i64 {
    let before = times.iter().copied().filter(|t| *t <= at).last().unwrap_or(at);
    longest_gap(times, before)
}

/// Two rooms with a call each on different workers of a pool of two, watched.
struct Drill {
    c: Cluster,
    kubelet: Kubelet,
    _operator: Operator,
    signalling: Signalling,
    browsers: Browsers,
    /// The room on the worker that goes away, and that worker's pod; the other room.
    moving: (String, String),
    staying: (String, String),
    old_ids: HashMap<String, Option<String>>,
    watched_from: i64,
}

impl Drill {
    /// Sets it up; `going` picks, of the two rooms' pods, the one that will go away.
    async fn start(test: &str, pool_extra: Value, operator: OperatorArgs, going: &str) -> Option<Drill> {
        let c = cluster(test).await?;
        let logs = logs_dir(&c);
        say(format!("{test}: logs in {}", logs.display()));
        let nodes: Vec<NodeInfo> = c.nodes(2).await;
        worker_token_secret(&c).await;
        let mut extra = json!({"rtcPorts": {"min": 42000, "max": 42099}});
        extra.as_object_mut().unwrap().extend(pool_extra.as_object().cloned().unwrap_or_default());
        c.create_pool("sfu", pool_spec(&c, &nodes, 2, extra)).await;
        let kubelet = Kubelet::start_processes(&c, nodes.clone(), program("fanout-worker"), logs.clone());
        let operator = Operator::start(&c, "op", operator);
        ready_pool(&c, "sfu", 2).await;

        // Spread puts the two rooms on different workers.
        let mut on = HashMap::new();
        for room in ["room-a", "room-b"] {
            c.create_room(room, json!({"maxPeers": 10})).await;
            on.insert(c.placed(room, WAIT).await.pod, room.to_string());
        }
        assert_eq!(on.len(), 2, "the rooms share a worker: {on:?}");
        let moving = on.get(going).cloned().map(|room| (room, going.to_string())).expect("a room on the pod that goes");
        let (staying_pod, staying_room) = on.iter().find(|(pod, _)| *pod != going).map(|(p, r)| (p.clone(), r.clone())).unwrap();

        let secret = format!("drill-secret-{}", std::process::id());
        let signalling = Signalling::start(&c, &secret, &logs).await;
        let mut browsers = Browsers::start(&signalling.url, &secret).await;
        for (name, room) in [("ada", &moving.0), ("bob", &moving.0), ("carol", &staying_room), ("dave", &staying_room)] {
            browsers.open(name, room).await;
        }
        browsers.receive_each_other("ada", "bob").await;
        browsers.receive_each_other("carol", "dave").await;
        let pairs = json!([["ada", "bob"], ["bob", "ada"], ["carol", "dave"], ["dave", "carol"]]);
        browsers.call(json!({"cmd": "watch", "pairs": pairs}), WAIT).await;
        let old_ids = browsers.report().await.ids;
        let watched_from = now_ms();
        tokio::time::sleep(Duration::from_secs(2)).await;
        Some(Drill {
            c,
            kubelet,
            _operator: operator,
            signalling,
            browsers,
            moving,
            staying: (staying_room, staying_pod),
            old_ids,
            watched_from,
        })
    }

    /// After the worker went at `gone_at`: the moving room's browsers rejoin on the other
    /// worker and decode each other, the other room was never touched. Prints the figures as
    /// `what` went.
    async fn check(mut self, gone_at: i64, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let report = self.browsers.report().await;
            let rejoined = ["ada", "bob"].iter().all(|p| {
                let id = report.ids.get(*p).cloned().flatten();
                id.is_some() && id != self.old_ids[*p] && report.states[*p].as_deref() == Some("joined")
            });
            if rejoined {
                break;
            }
            if Instant::now() > deadline {
                let diagnostics = self.browsers.diagnostics().await;
                panic!(
                    "ada and bob did not rejoin within 90 s: {:?} / {:?}\nsignalling log:\n{}\n{diagnostics}",
                    report.messages.get("ada"),
                    report.messages.get("bob"),
                    self.signalling.tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        self.browsers.receive_each_other("ada", "bob").await;
        let rooms: Api<Room> = self.c.api();
        let placement = rooms.get(&self.moving.0).await.unwrap().status.unwrap().placement.unwrap();
        assert_eq!(placement.pod, self.staying.1, "{} did not move to the other worker", self.moving.0);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let report = self.browsers.report().await;

        for p in ["ada", "bob"] {
            let rejoins = &report.rejoins[p];
            assert!(!rejoins.is_empty(), "{p} rejoined without being told (no rejoining event)");
            let told: Vec<String> = rejoins
                .iter()
                .map(|e| format!("{} {} at +{} ms", e["reason"].as_str().unwrap_or(""), e["code"].as_str().unwrap_or(""), e["at"].as_i64().unwrap_or(0) - gone_at))
                .collect();
            say(format!("{p} rejoined: {}", told.join(", ")));
        }
        for p in ["carol", "dave"] {
            assert_eq!(report.ids[p], self.old_ids[p], "{p} (room on the remaining worker) became another participant");
            assert!(report.rejoins[p].is_empty(), "{p} (room on the remaining worker) rejoined: {:?}", report.rejoins[p]);
        }
        let gap = |pair: &str| longest_gap(&report.progress[pair], self.watched_from);
        let (carol, dave) = (gap("carol<-dave"), gap("dave<-carol"));
        say(format!("figure: longest gap in carol decoding dave (room on the remaining worker) across the {what} drill = {carol} ms"));
        say(format!("figure: longest gap in dave decoding carol (room on the remaining worker) across the {what} drill = {dave} ms"));
        assert!(carol < STALL_MS && dave < STALL_MS, "video in the room on the remaining worker stalled: {carol} / {dave} ms");
        for (pair, who) in [("ada<-bob", "ada decoding bob"), ("bob<-ada", "bob decoding ada")] {
            let d = disruption(&report.progress[pair], gone_at);
            say(format!("figure: {who} (room on the {what} worker): last frame before -> first frame after = {d} ms"));
        }
        let first = ["ada", "bob"].iter().filter_map(|p| report.rejoins[*p].first()?["at"].as_i64()).min().unwrap();
        say(format!("figure: {what} worker -> first rejoin of a browser in its room = {} ms", first - gone_at));
        self.browsers.close().await;
        assert!(self.kubelet.errors().is_empty(), "kubelet: {:?}", self.kubelet.errors());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a browser drill: scripts/test-web.sh runs it once Chromium and the web client are installed"]
async fn a_killed_worker_pod_has_its_room_moved_by_the_operator_and_its_browsers_rejoin() {
    let grace = 2;
    let operator = OperatorArgs { reschedule_grace_seconds: grace, ..Default::default() };
    let Some(drill) = Drill::start("drill-killed", json!({}), operator, "sfu-0").await else { return };
    let pod = drill.moving.1.clone();
    let gone_at = now_ms();
    drill.kubelet.kill_worker(&pod).await;
    // Its readiness probe fails (period 1 s, one failure), as the chart's probe would soon.
    tokio::time::sleep(Duration::from_secs(1)).await;
    drill.kubelet.set_ready(&pod, false).await;
    say(format!("drill: SIGKILLed the worker of {pod} and marked the pod NotReady; the operator's reschedule grace is {grace} s"));
    drill.check(gone_at, "killed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a browser drill: scripts/test-web.sh runs it once Chromium and the web client are installed"]
async fn a_pool_scaled_down_mid_call_drains_and_moves_the_room_and_its_browsers_rejoin() {
    let drain = 3;
    // Scale-down drains the highest ordinals: sfu-1 goes.
    let Some(drill) = Drill::start("drill-scale-down", json!({"drainTimeoutSeconds": drain}), OperatorArgs::default(), "sfu-1").await
    else {
        return;
    };
    let pools: Api<SfuWorker> = drill.c.api();
    let pods: Api<Pod> = drill.c.api();
    pools.patch_scale("sfu", &PatchParams::default(), &Patch::Merge(json!({"spec": {"replicas": 1}}))).await.unwrap();
    let drain_started = now_ms();
    eventually("sfu-1 draining", WAIT, || async {
        pods.get("sfu-1").await.ok()?.annotations().contains_key("fanout.dev/draining-since").then_some(())
    })
    .await;
    // The draining worker takes no new room.
    drill.c.create_room("late", json!({"maxPeers": 10})).await;
    assert_eq!(drill.c.placed("late", WAIT).await.pod, "sfu-0", "a new room went to the draining worker");
    // At the drain timeout the pod is deleted and its worker stops (SIGTERM).
    eventually("sfu-1 deleted at its drain timeout", WAIT, || async { pods.get_opt("sfu-1").await.ok()?.is_none().then_some(()) }).await;
    say(format!("figure: scale-down -> draining pod deleted = {} ms (drain timeout {drain} s)", now_ms() - drain_started));
    drill.check(drain_started + drain * 1000, "drained").await;
}

/// ffprobe's codec name and duration (s) of a recorded file's one stream.
fn probe(path: &Path) -> (String, f64) {
    let out = std::process::Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", "format=duration:stream=codec_name", "-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs (apt-get install -y ffmpeg; scripts/test.sh installs it)");
    assert!(out.status.success(), "ffprobe {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    let parsed: Value = serde_json::from_slice(&out.stdout).expect("ffprobe's JSON");
    let streams = parsed["streams"].as_array().cloned().unwrap_or_default();
    assert_eq!(streams.len(), 1, "one stream in {}: {parsed}", path.display());
    let duration = parsed["format"]["duration"].as_str().and_then(|d| d.parse().ok()).expect("a duration");
    (streams[0]["codec_name"].as_str().unwrap_or_default().to_string(), duration)
}

/// What `ffmpeg -v error` prints while decoding the whole file: nothing for a clean one.
fn decode_errors(path: &Path) -> String {
    let out = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .expect("ffmpeg runs");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a browser drill: scripts/test-web.sh runs it once Chromium and the web client are installed"]
async fn a_recording_applied_to_a_room_with_a_browser_call_writes_files_that_players_read() {
    use fanout_operator::crd::{Recording, RecordingPhase};

    use crate::recordings::{create_recording, phase};

    let Some(c) = cluster("drill-recording").await else { return };
    let logs = logs_dir(&c);
    say(format!("drill-recording: logs in {}", logs.display()));
    let nodes = c.nodes(1).await;
    worker_token_secret(&c).await;
    let extra = json!({"rtcPorts": {"min": 42100, "max": 42199}, "recording": {"volume": {"emptyDir": {}}}});
    c.create_pool("sfu", pool_spec(&c, &nodes, 1, extra)).await;
    let kubelet = Kubelet::start_processes(&c, nodes.clone(), program("fanout-worker"), logs.clone());
    let _operator = Operator::start(&c, "op", OperatorArgs::default());
    ready_pool(&c, "sfu", 1).await;
    c.create_room("lesson", json!({"maxPeers": 10})).await;
    let placement = c.placed("lesson", WAIT).await;

    let secret = format!("drill-secret-{}", std::process::id());
    let signalling = Signalling::start(&c, &secret, &logs).await;
    let mut browsers = Browsers::start(&signalling.url, &secret).await;
    browsers.open("ada", "lesson").await;
    browsers.open("bob", "lesson").await;
    browsers.receive_each_other("ada", "bob").await;
    browsers.call(json!({"cmd": "watch", "pairs": [["ada", "bob"], ["bob", "ada"]]}), WAIT).await;
    let watched_from = now_ms();

    // kubectl apply, ten seconds, spec.stop: true.
    create_recording(&c, "lesson-1", json!({"roomName": "lesson"})).await.expect("the Recording is stored");
    phase(&c, "lesson-1", RecordingPhase::Recording).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let recordings: Api<Recording> = c.api();
    recordings.patch("lesson-1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"stop": true}}))).await.unwrap();
    let (stopped, reason) = phase(&c, "lesson-1", RecordingPhase::Stopped).await;
    assert_eq!(reason, "Stopped");
    let status = stopped.status.expect("a status");
    assert!(status.started_at.is_some() && status.stopped_at.is_some(), "{status:?}");
    // The span from the worker's own answer: the status's times are whole seconds (metav1.Time).
    let workers = fanout_worker::client::WorkerClient::new(Some(WORKER_TOKEN.into()), Duration::from_secs(2));
    let uid = stopped.metadata.uid.clone().expect("a uid");
    let on_worker = workers.recording(&placement.endpoint, "lesson", &uid).await.expect("the worker has the recording");
    let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap_or_else(|e| panic!("{t}: {e}"));
    let span_ms = at(on_worker.stopped_at.as_deref().expect("stoppedAt")).duration_since(at(&on_worker.started_at)).as_millis() as f64;
    say(format!("figure: recording drill: startedAt -> stoppedAt on the worker = {span_ms} ms"));
    assert!(span_ms >= 10_000.0, "recorded for at least the 10 s between Recording and stop: {span_ms} ms");

    // Two participants, a camera and a microphone each: four files on the pod's volume.
    let mut kinds: Vec<String> = status.files.iter().map(|f| f.kind.clone()).collect();
    kinds.sort();
    assert_eq!(kinds, ["audio", "audio", "video", "video"], "{:?}", status.files);
    let pods: Api<Pod> = c.api();
    let pod = pods.get(&placement.pod).await.unwrap();
    let volume = crate::kubelet::recording_dir(&pod).expect("the pod's recording volume");
    for file in &status.files {
        assert_eq!(file.pod, placement.pod, "{file:?}");
        // Each file starts at its first frame (video: the keyframe asked for at the start).
        assert!((0..2000).contains(&file.start_offset_ms), "{}: starts {} ms into the recording", file.path, file.start_offset_ms);
        let path = volume.join(&file.path);
        let on_disk = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).len();
        assert_eq!(on_disk as i64, file.bytes, "{}: the status has the file's size", file.path);
        let (codec, seconds) = probe(&path);
        assert_eq!(codec, if file.kind == "video" { "vp8" } else { "opus" }, "{}", file.path);
        let ms = seconds * 1000.0;
        say(format!("figure: recording drill: {} file {} ({codec}) duration by ffprobe = {ms:.0} ms of {span_ms} ms recorded", file.kind, file.name));
        assert!((ms - span_ms).abs() <= 500.0, "{}: ffprobe says {ms} ms for {span_ms} ms recorded", file.path);
        assert!((ms - file.duration_ms as f64).abs() <= 100.0, "{}: the status says {} ms, ffprobe {ms}", file.path, file.duration_ms);
        assert_eq!(decode_errors(&path), "", "{}: ffmpeg decodes it with no error", file.path);
    }

    // The call went on meanwhile.
    let report = browsers.report().await;
    for pair in ["ada<-bob", "bob<-ada"] {
        let gap = longest_gap(&report.progress[pair], watched_from);
        say(format!("figure: recording drill: longest gap in {pair} while recorded = {gap} ms"));
        assert!(gap < STALL_MS, "{pair} stalled for {gap} ms while the room was recorded");
    }
    recordings.delete("lesson-1", &Default::default()).await.unwrap();
    eventually("lesson-1 gone", WAIT, || async { recordings.get_opt("lesson-1").await.ok()?.is_none().then_some(()) }).await;
    browsers.close().await;
    assert!(kubelet.errors().is_empty(), "kubelet: {:?}", kubelet.errors());
}
