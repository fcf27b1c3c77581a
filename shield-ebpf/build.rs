//! Rebuild when bpf-linker changes: the crate has an undeclared dependency on
//! that binary (cargo cannot express it as an artifact dependency yet).
use which::which;

fn main() {
    match which("bpf-linker") {
        Ok(path) => println!("cargo:rerun-if-changed={}", path.display()),
        Err(e) => println!("cargo:warning=bpf-linker not found ({e}); run `cargo xtask setup`"),
    }
}
