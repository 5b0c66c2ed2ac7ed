//! Compiles the XDP steering program (`bpf/steer.c`) with clang into
//! `$OUT_DIR/steer.bpf.o`, which `src/lib.rs` embeds. Needs clang and the
//! libbpf headers: on Debian, the packages `clang llvm libbpf-dev`
//! (`scripts/deps.sh` installs them). `CLANG` names another clang binary.

use std::env;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::Command;

const SOURCE: &str = "bpf/steer.c";
const PACKAGES: &str = "install the Debian packages `clang llvm libbpf-dev` (scripts/deps.sh does)";

fn main() {
    println!("cargo:rerun-if-changed={SOURCE}");
    println!("cargo:rerun-if-env-changed=CLANG");

    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("steer.bpf.o");
    let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".to_owned());
    // <linux/types.h> includes <asm/types.h>, which Debian keeps under the
    // multiarch directory of the host.
    let multiarch = format!("/usr/include/{target_arch}-linux-gnu");

    let result = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-I{multiarch}"))
        .arg("-c")
        .arg(SOURCE)
        .arg("-o")
        .arg(&out)
        .output();
    let output = match result {
        Ok(output) => output,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            fail(&format!("`{clang}` was not found; the XDP program is built with clang: {PACKAGES}"))
        }
        Err(e) => fail(&format!("could not run `{clang}`: {e}")),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let hint = if stderr.contains("file not found") {
            format!("a header is missing (libbpf's <bpf/...> or the kernel's <linux/...>): {PACKAGES}")
        } else {
            format!("(the toolchain expected: {PACKAGES})")
        };
        fail(&format!("`{clang}` could not compile {SOURCE} ({}):\n{stderr}\n{hint}", output.status));
    }
}

fn fail(message: &str) -> ! {
    panic!("vpngw-ebpf: {message}");
}
