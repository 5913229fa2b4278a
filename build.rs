//! Records the compiler version for `minference bench --json` (the GPU machine has no rustc).

fn main() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let version = std::process::Command::new(rustc)
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=MINFERENCE_RUSTC_VERSION={version}");
    println!("cargo:rerun-if-changed=build.rs");
}
