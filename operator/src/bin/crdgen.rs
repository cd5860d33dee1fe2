//! Writes the CustomResourceDefinitions to `crds/` (and the Helm chart's copy when present).
//! Run from the repository root: `cargo run -p fanout-operator --bin crdgen`.

use std::path::Path;

fn main() -> anyhow::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let targets = [root.join("crds"), root.join("charts/fanout/crds")];
    for (file, yaml) in fanout_operator::crd::manifests() {
        for dir in &targets {
            if dir == &targets[1] && !dir.exists() {
                continue;
            }
            std::fs::create_dir_all(dir)?;
            let path = dir.join(file);
            std::fs::write(&path, &yaml)?;
            println!("wrote {}", path.canonicalize()?.display());
        }
    }
    Ok(())
}
