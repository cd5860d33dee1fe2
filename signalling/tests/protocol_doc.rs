//! docs/protocol.md names every Socket.IO event signalling handles or emits, so that a new
//! event cannot ship undocumented.

use std::path::Path;

use fanout_signalling::events::REQUESTS;

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The event names (kebab-case string literals) in the non-test code of signalling's sources
/// that emit: the notifications, the answers and the names requests are matched by.
fn emitted_names(src: &Path) -> Vec<String> {
    let mut names = Vec::new();
    for file in ["events.rs", "followers.rs", "server.rs", "expiry.rs", "handlers.rs", "chat.rs"] {
        let text = read(&src.join(file));
        let code = text.split("#[cfg(test)]").next().unwrap_or_default();
        for literal in code.split('"').skip(1).step_by(2) {
            let kebab = literal.contains('-')
                && literal.split('-').all(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_lowercase()));
            if kebab {
                names.push(literal.to_owned());
            }
        }
    }
    names.sort();
    names.dedup();
    names
}

#[test]
fn docs_protocol_md_names_every_event() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let doc = read(&root.join("../docs/protocol.md"));
    let mut names: Vec<String> = REQUESTS
        .iter()
        .flat_map(|(request, answer)| std::iter::once(*request).chain(*answer))
        .map(str::to_owned)
        .collect();
    names.extend(emitted_names(&root.join("src")));
    names.push("error".to_owned());
    assert!(names.len() > 30, "the scan found too few events: {names:?}");
    let missing: Vec<&String> = names.iter().filter(|n| !doc.contains(&format!("`{n}`"))).collect();
    assert!(
        missing.is_empty(),
        "docs/protocol.md does not name these events (as `name`): {missing:?}; document their payloads, answers and errors there"
    );
}
