//! Records the commit limpet is built from (`LIMPET_COMMIT`), for `--version` and
//! `limpet_build_info`: the short hash, with `-dirty` when the tree had changes, or
//! `unknown` outside a git checkout. A `LIMPET_COMMIT` in the build's environment wins
//! (container builds that leave `.git` out pass it in).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    // A checkout owned by another user (a CI runner, a container build) is still ours
    // to read: without this, git refuses it as of "dubious ownership".
    let out = Command::new("git")
        .args(["-c", "safe.directory=*"])
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn main() {
    let given = std::env::var("LIMPET_COMMIT").ok().filter(|c| !c.is_empty());
    let commit = given.unwrap_or_else(|| match git(&["rev-parse", "--short=12", "HEAD"]) {
        None => "unknown".to_string(),
        Some(hash) => match git(&["status", "--porcelain", "--untracked-files=no"]) {
            Some(changes) if !changes.is_empty() => format!("{hash}-dirty"),
            _ => hash,
        },
    });
    println!("cargo:rustc-env=LIMPET_COMMIT={commit}");
    // Rebuild when HEAD moves (a commit, a checkout) or the index changes.
    if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
        for f in ["HEAD", "index"] {
            println!("cargo:rerun-if-changed={dir}/{f}");
        }
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            println!("cargo:rerun-if-changed={dir}/{head_ref}");
        }
    }
    println!("cargo:rerun-if-env-changed=LIMPET_COMMIT");
}
