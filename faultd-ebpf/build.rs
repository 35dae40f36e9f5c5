//! Compiles every `src/bpf/*.bpf.c` with clang into `OUT_DIR` and generates `objects.rs`, which exposes
//! each object as an 8-byte-aligned `&[u8]` (`trace.bpf.c` → `TRACE_OBJ`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What to install when the toolchain for the eBPF programs is missing.
const INSTALL: &str =
    "install clang and libbpf-dev (`apt-get install clang libbpf-dev`, or `cargo xtask deps`)";

fn fail(msg: &str) -> ! {
    // One sentence: cargo prints it as a warning at the top and under the build script's stderr.
    println!("cargo::warning={msg}");
    eprintln!("{msg}");
    std::process::exit(1);
}

/// Appends `SYSCALL_NAMES` (x86_64 syscall number → name, "" for gaps) from linux-libc-dev's
/// `asm/unistd_64.h`.
fn syscall_names(generated: &mut String, multiarch: &str) {
    let header = format!("/usr/include/{multiarch}/asm/unistd_64.h");
    println!("cargo::rerun-if-changed={header}");
    let text = std::fs::read_to_string(&header).unwrap_or_else(|e| {
        fail(&format!(
            "faultd-ebpf needs the kernel headers ({header}: {e}): install linux-libc-dev (`apt-get install linux-libc-dev`)."
        ))
    });
    let mut names: Vec<String> = Vec::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("#define"), Some(name), Some(nr)) = (words.next(), words.next(), words.next())
            && let (Some(name), Ok(nr)) = (name.strip_prefix("__NR_"), nr.parse::<usize>())
        {
            if names.len() <= nr {
                names.resize(nr + 1, String::new());
            }
            names[nr] = name.to_owned();
        }
    }
    let list: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
    let _ = writeln!(
        generated,
        "/// Syscall names of the host architecture by number (\"\" where none), from linux-libc-dev's \
         `asm/unistd_64.h`.\npub static SYSCALL_NAMES: &[&str] = &[{}];",
        list.join(", ")
    );
}

fn main() {
    let manifest =
        PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR"));
    let src = manifest.join("src/bpf");
    println!("cargo::rerun-if-changed={}", src.display());
    println!("cargo::rerun-if-env-changed=CLANG");
    println!("cargo::rerun-if-env-changed=LIBBPF_INCLUDE");

    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    match Command::new(&clang).arg("--version").output() {
        Ok(o) if o.status.success() => {}
        _ => fail(&format!(
            "faultd-ebpf needs clang (`{clang}` was not found) to compile its eBPF programs: {INSTALL}."
        )),
    }
    let libbpf_include =
        std::env::var("LIBBPF_INCLUDE").unwrap_or_else(|_| "/usr/include".to_owned());
    if !Path::new(&libbpf_include)
        .join("bpf/bpf_helpers.h")
        .is_file()
    {
        fail(&format!(
            "faultd-ebpf needs the libbpf headers ({libbpf_include}/bpf/bpf_helpers.h is missing) to compile its eBPF programs: {INSTALL}."
        ));
    }
    let (target_arch, multiarch) = match std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => ("arm64", "aarch64-linux-gnu"),
        _ => ("x86", "x86_64-linux-gnu"),
    };

    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", src.display())))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_str().is_some_and(|s| s.ends_with(".bpf.c")))
        .collect();
    sources.sort();

    let mut generated = String::new();
    let mut all = String::new();
    for source in &sources {
        println!("cargo::rerun-if-changed={}", source.display());
        let file = source
            .file_name()
            .and_then(|f| f.to_str())
            .unwrap_or_default();
        let stem = file.trim_end_matches(".bpf.c");
        let object = out.join(format!("{stem}.bpf.o"));
        let output = Command::new(&clang)
            .args(["-g", "-O2", "-target", "bpf", "-Wall", "-Werror"])
            .arg(format!("-D__TARGET_ARCH_{target_arch}"))
            .arg(format!("-I{}", src.display()))
            .arg(format!("-I{libbpf_include}"))
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(source)
            .arg("-o")
            .arg(&object)
            .output()
            .unwrap_or_else(|e| fail(&format!("cannot run {clang}: {e}")));
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            for line in stderr.lines() {
                println!("cargo::warning={line}");
            }
            fail(&format!(
                "clang failed to compile {file} (its errors are above)"
            ));
        }
        let ident = stem.to_uppercase().replace(['-', '.'], "_");
        let _ = writeln!(
            generated,
            "/// The compiled `src/bpf/{file}` (an eBPF ELF object with BTF, 8-byte aligned).\n\
             pub static {ident}_OBJ: &[u8] = include_bytes_aligned!({:?});",
            object.display().to_string()
        );
        let _ = write!(all, "({stem:?}, {ident}_OBJ), ");
    }
    syscall_names(&mut generated, multiarch);
    let _ = writeln!(
        generated,
        "/// Every compiled object as `(stem, bytes)`, e.g. `(\"trace\", TRACE_OBJ)`.\n\
         pub static OBJECTS: &[(&str, &[u8])] = &[{all}];"
    );
    std::fs::write(out.join("objects.rs"), generated)
        .unwrap_or_else(|e| fail(&format!("cannot write objects.rs: {e}")));
}
