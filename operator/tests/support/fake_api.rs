//! A small, stateful stand-in for the Kubernetes API server, served through kube's tower-test
//! mock pair. It keeps objects as JSON and answers the calls the operator makes: list/get/
//! create/delete/patch (merge, JSON patch, server-side apply) of pods, rooms, sfuworkers and
//! their status subresources, nodes, leases, and events. Finalizers and deletion timestamps
//! behave like the real thing, so finalizer flows can be tested end to end.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};

/// (resource plural, namespace or "", name)
pub type Key = (String, String, String);

#[derive(Default)]
pub struct State {
    pub objects: BTreeMap<Key, Value>,
    pub next_version: u64,
    pub next_uid: u64,
    /// Every request as "METHOD path".
    pub requests: Vec<String>,
    /// Requests to fail with 500, by "METHOD plural" (for error-path tests).
    pub fail: Vec<String>,
}

#[derive(Clone)]
pub struct FakeApi {
    pub state: Arc<Mutex<State>>,
}

impl FakeApi {
    /// Starts the fake and returns a client talking to it.
    pub fn start() -> (FakeApi, Client) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let fake = FakeApi { state: Arc::new(Mutex::new(State::default())) };
        let server = fake.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let body = body.collect_bytes().await.unwrap_or_default();
                let (status, value) = server.handle(&parts.method, &parts.uri, &parts.headers, &body);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&value).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        (fake, Client::new(service, "default"))
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Inserts or replaces an object as-is (as if another client had written it).
    pub fn put(&self, plural: &str, value: Value) -> Value {
        let mut st = self.lock();
        let ns = value["metadata"]["namespace"].as_str().unwrap_or_default().to_string();
        let name = value["metadata"]["name"].as_str().unwrap().to_string();
        let mut value = value;
        stamp(&mut st, &mut value, true);
        st.objects.insert((plural.into(), ns, name), value.clone());
        value
    }

    pub fn get(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.get(&(plural.into(), ns.into(), name.into())).cloned()
    }

    pub fn list(&self, plural: &str) -> Vec<Value> {
        self.lock().objects.iter().filter(|(k, _)| k.0 == plural).map(|(_, v)| v.clone()).collect()
    }

    pub fn remove(&self, plural: &str, ns: &str, name: &str) -> Option<Value> {
        self.lock().objects.remove(&(plural.into(), ns.into(), name.into()))
    }

    /// Changes an object in place (as a kubelet or user would), bumping its resourceVersion.
    pub fn update(&self, plural: &str, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.lock();
        let key = (plural.to_string(), ns.to_string(), name.to_string());
        let mut value = st.objects.get(&key).cloned().expect("object exists");
        f(&mut value);
        stamp(&mut st, &mut value, false);
        st.objects.insert(key, value);
    }

    fn handle(&self, method: &Method, uri: &http::Uri, headers: &http::HeaderMap, body: &[u8]) -> (StatusCode, Value) {
        let path = uri.path();
        let query = parse_query(uri.query().unwrap_or_default());
        let mut st = self.lock();
        st.requests.push(format!("{method} {path}"));
        let route = match route(path) {
            Some(r) => r,
            None => return not_found(path),
        };
        if st.fail.iter().any(|f| *f == format!("{method} {}", route.plural)) {
            return (StatusCode::INTERNAL_SERVER_ERROR, status_body(500, "InternalError", "injected failure"));
        }
        let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default();
        let input: Value = if body.is_empty() { Value::Null } else { serde_json::from_slice(body).unwrap_or(Value::Null) };
        match (method.clone(), route.name.clone()) {
            (Method::GET, None) => {
                let selector = query.get("labelSelector").cloned().unwrap_or_default();
                let items: Vec<Value> = st
                    .objects
                    .iter()
                    .filter(|(k, _)| k.0 == route.plural && (route.namespace.is_empty() || k.1 == route.namespace))
                    .filter(|(_, v)| selector_matches(&selector, &v["metadata"]["labels"]))
                    .map(|(_, v)| v.clone())
                    .collect();
                let version = st.next_version.to_string();
                (StatusCode::OK, json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}))
            }
            (Method::GET, Some(name)) => match st.objects.get(&route.key(&name)) {
                Some(v) => (StatusCode::OK, v.clone()),
                None => not_found(&name),
            },
            (Method::POST, None) => {
                let mut value = input;
                let name = match value["metadata"]["name"].as_str() {
                    Some(n) => n.to_string(),
                    None => return (StatusCode::UNPROCESSABLE_ENTITY, status_body(422, "Invalid", "metadata.name required")),
                };
                let key = route.key(&name);
                if st.objects.contains_key(&key) {
                    return (StatusCode::CONFLICT, status_body(409, "AlreadyExists", &format!("{name} already exists")));
                }
                if !route.namespace.is_empty() {
                    value["metadata"]["namespace"] = json!(route.namespace);
                }
                stamp(&mut st, &mut value, true);
                st.objects.insert(key, value.clone());
                (StatusCode::CREATED, value)
            }
            (Method::PUT, Some(name)) => {
                let key = route.key(&name);
                let mut value = input;
                if let Some(current) = st.objects.get(&key) {
                    let want = value["metadata"]["resourceVersion"].as_str().unwrap_or_default();
                    if !want.is_empty() && current["metadata"]["resourceVersion"].as_str() != Some(want) {
                        return (StatusCode::CONFLICT, status_body(409, "Conflict", "resourceVersion mismatch"));
                    }
                    value["metadata"]["uid"] = current["metadata"]["uid"].clone();
                } else {
                    return not_found(&name);
                }
                stamp(&mut st, &mut value, false);
                st.objects.insert(key, value.clone());
                (StatusCode::OK, value)
            }
            (Method::DELETE, Some(name)) => {
                let key = route.key(&name);
                let Some(mut value) = st.objects.get(&key).cloned() else { return not_found(&name) };
                let has_finalizers = value["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
                if has_finalizers {
                    if value["metadata"]["deletionTimestamp"].is_null() {
                        value["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
                        stamp(&mut st, &mut value, false);
                        st.objects.insert(key, value.clone());
                    }
                } else {
                    st.objects.remove(&key);
                }
                (StatusCode::OK, value)
            }
            (Method::PATCH, Some(name)) => {
                let key = route.key(&name);
                let Some(current) = st.objects.get(&key).cloned() else { return not_found(&name) };
                let patched = if content_type.contains("json-patch") {
                    match apply_json_patch(current.clone(), &input) {
                        Ok(v) => v,
                        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, status_body(422, "Invalid", &e)),
                    }
                } else if content_type.contains("apply-patch") && route.status {
                    // Server-side apply by our single field manager: its status replaces the old.
                    let mut v = current.clone();
                    v["status"] = input["status"].clone();
                    v
                } else {
                    let mut v = current.clone();
                    let patch = if route.status { json!({"status": input["status"]}) } else { input };
                    merge_patch(&mut v, &patch);
                    v
                };
                let mut patched = patched;
                stamp(&mut st, &mut patched, false);
                // An object being deleted goes away when its last finalizer is removed.
                let deleting = !patched["metadata"]["deletionTimestamp"].is_null();
                let no_finalizers = patched["metadata"]["finalizers"].as_array().is_none_or(|f| f.is_empty());
                if deleting && no_finalizers {
                    st.objects.remove(&key);
                } else {
                    st.objects.insert(key, patched.clone());
                }
                (StatusCode::OK, patched)
            }
            _ => (StatusCode::METHOD_NOT_ALLOWED, status_body(405, "MethodNotAllowed", path)),
        }
    }
}

struct Route {
    plural: String,
    namespace: String,
    name: Option<String>,
    status: bool,
}

impl Route {
    fn key(&self, name: &str) -> Key {
        (self.plural.clone(), self.namespace.clone(), name.to_string())
    }
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` paths.
fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest: &[&str] = match parts.as_slice() {
        ["api", "v1", rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (ns.to_string(), rest),
        _ => (String::new(), rest),
    };
    match rest {
        [plural] => Some(Route { plural: plural.to_string(), namespace, name: None, status: false }),
        [plural, name] => Some(Route { plural: plural.to_string(), namespace, name: Some(name.to_string()), status: false }),
        [plural, name, "status"] => Some(Route { plural: plural.to_string(), namespace, name: Some(name.to_string()), status: true }),
        _ => None,
    }
}

fn stamp(st: &mut State, value: &mut Value, new: bool) {
    st.next_version += 1;
    value["metadata"]["resourceVersion"] = json!(st.next_version.to_string());
    if new || value["metadata"]["uid"].is_null() {
        if value["metadata"]["uid"].is_null() {
            st.next_uid += 1;
            value["metadata"]["uid"] = json!(format!("uid-{}", st.next_uid));
        }
        if value["metadata"]["creationTimestamp"].is_null() {
            value["metadata"]["creationTimestamp"] = json!(jiff::Timestamp::now().to_string());
        }
        if value["metadata"]["generation"].is_null() {
            value["metadata"]["generation"] = json!(1);
        }
    }
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code})
}

fn not_found(what: &str) -> (StatusCode, Value) {
    (StatusCode::NOT_FOUND, status_body(404, "NotFound", &format!("{what} not found")))
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Equality-based selectors (`a=b,c`) and existence (`key`), which is all the operator uses.
fn selector_matches(selector: &str, labels: &Value) -> bool {
    selector.split(',').filter(|s| !s.is_empty()).all(|term| match term.split_once('=') {
        Some((k, v)) => labels[k].as_str() == Some(v),
        None => !labels[term].is_null(),
    })
}

fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(map) => {
            if !target.is_object() {
                *target = json!({});
            }
            for (k, v) in map {
                if v.is_null() {
                    target.as_object_mut().unwrap().remove(k);
                } else {
                    merge_patch(target.as_object_mut().unwrap().entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 test/add/remove/replace, with Kubernetes' reading of `test` against a missing
/// path as a test against null.
fn apply_json_patch(mut doc: Value, ops: &Value) -> Result<Value, String> {
    for op in ops.as_array().ok_or("patch is not an array")? {
        let path = op["path"].as_str().ok_or("op without path")?;
        let segments: Vec<String> = path.split('/').skip(1).map(|s| s.replace("~1", "/").replace("~0", "~")).collect();
        let (last, parents) = segments.split_last().ok_or("empty path")?;
        match op["op"].as_str() {
            Some("test") => {
                let found = doc.pointer(path).cloned().unwrap_or(Value::Null);
                if found != op["value"] {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some(kind @ ("add" | "remove" | "replace")) => {
                let mut parent = &mut doc;
                for seg in parents {
                    parent = match parent {
                        Value::Object(m) => m.entry(seg.clone()).or_insert(json!({})),
                        Value::Array(a) => a.get_mut(seg.parse::<usize>().map_err(|_| "bad index")?).ok_or("index out of range")?,
                        _ => return Err(format!("cannot descend into {seg}")),
                    };
                }
                match (parent, kind) {
                    (Value::Object(m), "remove") => {
                        m.remove(last).ok_or("nothing to remove")?;
                    }
                    (Value::Object(m), _) => {
                        m.insert(last.clone(), op["value"].clone());
                    }
                    (Value::Array(a), "remove") => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        if i >= a.len() {
                            return Err("index out of range".into());
                        }
                        a.remove(i);
                    }
                    (Value::Array(a), "add") if last == "-" => a.push(op["value"].clone()),
                    (Value::Array(a), "add") => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        a.insert(i.min(a.len()), op["value"].clone());
                    }
                    (Value::Array(a), _) => {
                        let i: usize = last.parse().map_err(|_| "bad index")?;
                        *a.get_mut(i).ok_or("index out of range")? = op["value"].clone();
                    }
                    _ => return Err(format!("cannot patch {path}")),
                }
            }
            other => return Err(format!("unsupported op {other:?}")),
        }
    }
    Ok(doc)
}
