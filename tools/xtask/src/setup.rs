//! `cargo xtask setup`: everything the cross builds (and, with `--qemu`, the emulators) need.
//!
//! Cross targets: rustup's prebuilt standard library when rustup can download it; otherwise the
//! build-std route: `core`/`alloc` compiled from the Rust library sources, which come from
//! Debian's `rust-src` package of exactly our rustc version (unpacked into the cache, never
//! installed into the system), linked into the toolchain's sysroot where cargo looks for them.
//! Which route a target takes is decided again at build time by [`route`], from what is on disk.

use crate::util::{Cmd, Res, cache_dir, have, is_root, mkdirs};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cross targets the core must build for.
pub const TARGETS: &[&str] = &[
    "thumbv7em-none-eabihf",
    "thumbv6m-none-eabi",
    "riscv32imac-unknown-none-elf",
    "wasm32-unknown-unknown",
];

/// How a target's standard library is obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    /// Prebuilt by rustup: plain `cargo build --target`.
    Rustup,
    /// Compiled from source: `RUSTC_BOOTSTRAP=1 cargo build -Zbuild-std=core,alloc`.
    BuildStd,
}

const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
const DEFAULT_DEBIAN_URI: &str = "http://deb.debian.org/debian";

/// Options of `cargo xtask setup`.
#[derive(Default)]
pub struct Opts {
    /// Also install QEMU (needed from the firmware-test issue on).
    pub qemu: bool,
}

pub fn setup(opts: &Opts) -> Res {
    let t0 = std::time::Instant::now();
    let sysroot = sysroot()?;
    tools_components()?;
    targets(&sysroot)?;
    if opts.qemu {
        qemu()?;
    }
    println!("setup: done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// `rustc --print sysroot` of the toolchain cargo uses here. `TOPKIT_SYSROOT` replaces it, to
/// test setup against an empty folder without touching the real toolchain.
pub fn sysroot() -> Res<PathBuf> {
    if let Some(s) = std::env::var_os("TOPKIT_SYSROOT").filter(|s| !s.is_empty()) {
        return Ok(PathBuf::from(s));
    }
    Cmd::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .map(PathBuf::from)
}

/// `1.95.0` from `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_version() -> Res<String> {
    let v = Cmd::new("rustc").arg("--version").output()?;
    v.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .ok_or_else(|| format!("cannot parse `{v}`"))
}

fn rustup_timeout() -> Duration {
    let s = std::env::var("TOPKIT_RUSTUP_TIMEOUT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    Duration::from_secs(s)
}

/// rustfmt and clippy: the `fmt` and `clippy` jobs need them.
fn tools_components() -> Res {
    let missing: Vec<&str> = [("rustfmt", "fmt"), ("clippy", "clippy")]
        .into_iter()
        .filter(|(_, sub)| Cmd::cargo().args([*sub, "--version"]).output().is_err())
        .map(|(c, _)| c)
        .collect();
    if missing.is_empty() {
        println!("setup: rustfmt and clippy present");
        return Ok(());
    }
    Cmd::new("rustup")
        .args(["component", "add"])
        .args(&missing)
        .run_with_timeout(rustup_timeout() * 3)
}

/// True when rustup (or a distribution) put a prebuilt `core` for `target` in the sysroot.
fn prebuilt_std(sysroot: &Path, target: &str) -> bool {
    let lib = sysroot.join("lib/rustlib").join(target).join("lib");
    std::fs::read_dir(lib).is_ok_and(|rd| {
        rd.filter_map(|e| e.ok()).any(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with("libcore-") && n.ends_with(".rlib"))
        })
    })
}

/// Where cargo's `-Zbuild-std` looks for the library sources.
fn library_link(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib/src/rust/library")
}

/// The sources in the sysroot are usable for this rustc: rustup's own `rust-src` component
/// (a real folder), or our symlink into `rustc-<version>` sources.
fn library_ok(sysroot: &Path, version: &str) -> bool {
    let link = library_link(sysroot);
    if !link.join("core/src/lib.rs").is_file() || !link.join("alloc/src/lib.rs").is_file() {
        return false;
    }
    match std::fs::read_link(&link) {
        // A symlink left behind from an older rustc would build a mismatched core.
        Ok(target) => target
            .to_string_lossy()
            .contains(&format!("rustc-{version}/")),
        Err(_) => true,
    }
}

/// `TOPKIT_BUILD_STD=1` takes the build-std route even where rustup's std is installed (to
/// exercise the fallback on a machine where rustup works).
fn forced_build_std() -> bool {
    std::env::var("TOPKIT_BUILD_STD").is_ok_and(|v| v == "1")
}

/// The route a target builds with right now (after setup).
pub fn route(sysroot: &Path, target: &str) -> Route {
    if prebuilt_std(sysroot, target) && !forced_build_std() {
        Route::Rustup
    } else {
        Route::BuildStd
    }
}

fn targets(sysroot: &Path) -> Res {
    let mut missing: Vec<&str> = Vec::new();
    for t in TARGETS {
        if route(sysroot, t) == Route::Rustup {
            println!("setup: target {t}: prebuilt std present (rustup)");
        } else {
            missing.push(t);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    // Try rustup once per target; after the first failure (no route to the dist server) the
    // others would fail the same way, so stop trying.
    let mut rustup_works = have("rustup") && !forced_build_std();
    let mut need_src = Vec::new();
    for t in missing {
        if rustup_works {
            match Cmd::new("rustup")
                .args(["target", "add", t])
                .run_with_timeout(rustup_timeout())
            {
                Ok(()) if prebuilt_std(sysroot, t) => {
                    println!("setup: target {t}: installed by rustup");
                    continue;
                }
                Ok(()) => println!(
                    "setup: rustup reported success but no std for {t} in {}",
                    sysroot.display()
                ),
                Err(e) => println!("setup: rustup cannot add {t} ({e}); using build-std"),
            }
            rustup_works = false;
        }
        need_src.push(t);
    }
    let version = rustc_version()?;
    if library_ok(sysroot, &version) {
        println!(
            "setup: Rust library sources present at {}",
            library_link(sysroot).display()
        );
    } else {
        rust_src_from_debian(sysroot, &version)?;
    }
    for t in need_src {
        println!("setup: target {t}: build-std (RUSTC_BOOTSTRAP=1 -Zbuild-std=core,alloc)");
    }
    Ok(())
}

/// The URI of the machine's main Debian archive, so our private lists use the same mirror
/// (or the same snapshot proxy) as the system.
fn debian_uri() -> String {
    let deb822 =
        std::fs::read_to_string("/etc/apt/sources.list.d/debian.sources").unwrap_or_default();
    for stanza in deb822.split("\n\n") {
        let field = |name: &str| {
            stanza
                .lines()
                .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
        };
        if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
            && !suites.contains("security")
            && let Some(u) = uris.split_whitespace().next()
        {
            return u.trim_end_matches('/').to_string();
        }
    }
    let one_line = std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default();
    for l in one_line.lines() {
        let words: Vec<&str> = l
            .split_whitespace()
            .filter(|w| !w.starts_with('['))
            .collect();
        if words.first() == Some(&"deb") && words.len() >= 3 && !words[2].contains("security") {
            return words[1].trim_end_matches('/').to_string();
        }
    }
    DEFAULT_DEBIAN_URI.to_string()
}

/// apt with its own sources list, package lists and archive cache under `dir`: it sees only
/// the suites we give it and leaves the system's apt state alone.
struct PrivateApt {
    dir: PathBuf,
    with_system: bool,
}

impl PrivateApt {
    /// `suites`: `<suite> <components>` on the machine's Debian mirror. `with_system`: keep the
    /// machine's own sources too (needed to resolve dependencies when installing).
    fn new(dir: PathBuf, suites: &[&str], with_system: bool) -> Res<Self> {
        mkdirs(&dir.join("lists/partial"))?;
        mkdirs(&dir.join("cache/archives/partial"))?;
        let uri = debian_uri();
        let mut list = String::new();
        if with_system {
            // Our file replaces /etc/apt/sources.list, so carry its lines over.
            list.push_str(&std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default());
            list.push('\n');
        }
        for s in suites {
            list.push_str(&format!("deb [signed-by={DEBIAN_KEYRING}] {uri} {s}\n"));
        }
        let path = dir.join("sources.list");
        if std::fs::read_to_string(&path).ok().as_deref() != Some(list.as_str()) {
            std::fs::write(&path, &list)
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            // New sources: the lists must be fetched again.
            let _ = std::fs::remove_file(dir.join("updated.stamp"));
        }
        Ok(PrivateApt { dir, with_system })
    }

    fn opts(&self) -> Vec<String> {
        let d = self.dir.display();
        // /dev/null as SourceParts hides the system's suites from apt.
        let parts = if self.with_system {
            "/etc/apt/sources.list.d"
        } else {
            "/dev/null"
        };
        let mut o = vec![
            format!("-oDir::Etc::SourceList={d}/sources.list"),
            format!("-oDir::Etc::SourceParts={parts}"),
            format!("-oDir::State::Lists={d}/lists"),
            format!("-oDir::Cache={d}/cache"),
        ];
        if is_root() {
            // apt drops to the `_apt` user for downloads, which cannot enter a private
            // cache under /root; it would fall back with a warning.
            o.push("-oAPT::Sandbox::User=root".into());
        }
        o
    }

    fn cmd(&self, tool: &str) -> Cmd {
        Cmd::new(tool).args(self.opts())
    }

    /// `apt-get update` of the private lists, at most once a day.
    fn update(&self) -> Res {
        let stamp = self.dir.join("updated.stamp");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .is_ok_and(|t| {
                t.elapsed()
                    .is_ok_and(|e| e < Duration::from_secs(24 * 3600))
            });
        if fresh {
            return Ok(());
        }
        self.cmd("apt-get").args(["-q", "update"]).run()?;
        std::fs::write(&stamp, "").map_err(|e| format!("cannot write {}: {e}", stamp.display()))
    }
}

/// `upstream` part of a Debian version: `1:1.95.0+dfsg1-2~bpo13+1` -> `1.95.0`.
fn debian_upstream(v: &str) -> &str {
    let v = v.split_once(':').map_or(v, |(_, rest)| rest);
    v.split(['+', '-', '~']).next().unwrap_or(v)
}

fn rust_src_from_debian(sysroot: &Path, version: &str) -> Res {
    if !have("apt-get") || !have("dpkg") {
        return Err(format!(
            "no prebuilt std for the cross targets and no Debian tools to fetch rust-src {version}; \
             install the targets with `rustup target add {}` or the rust-src component",
            TARGETS.join(" ")
        ));
    }
    let cache = cache_dir();
    let unpacked = cache.join(format!("rust-src-{version}"));
    let library = unpacked.join(format!("usr/src/rustc-{version}/library"));
    if !library.join("core/src/lib.rs").is_file() {
        let apt = PrivateApt::new(cache.join("apt"), &["trixie-backports main"], false)?;
        let deb = match find_deb(&apt.dir, version) {
            Some(d) => d,
            None => {
                apt.update()?;
                let madison = apt
                    .cmd("apt-cache")
                    .args(["madison", "rust-src"])
                    .output()?;
                // Lines: `rust-src | 1.95.0+dfsg1-2~bpo13+1 | http://... Packages`, newest first.
                let deb_version = madison
                    .lines()
                    .filter_map(|l| l.split('|').nth(1).map(str::trim))
                    .find(|v| debian_upstream(v) == version)
                    .ok_or_else(|| {
                        format!(
                            "Debian trixie-backports has no rust-src {version} (has: {})",
                            madison.replace('\n', "; ")
                        )
                    })?
                    .to_string();
                apt.cmd("apt-get")
                    .args(["-q", "download", &format!("rust-src={deb_version}")])
                    .cwd(&apt.dir)
                    .run()?;
                find_deb(&apt.dir, version).ok_or("apt-get download left no rust-src .deb")?
            }
        };
        let tmp = cache.join(format!("rust-src-{version}.partial"));
        let _ = std::fs::remove_dir_all(&tmp);
        Cmd::new("dpkg").arg("-x").arg(&deb).arg(&tmp).run()?;
        if !tmp
            .join(format!("usr/src/rustc-{version}/library/core/src/lib.rs"))
            .is_file()
        {
            return Err(format!(
                "{} has no usr/src/rustc-{version}/library",
                deb.display()
            ));
        }
        let _ = std::fs::remove_dir_all(&unpacked);
        std::fs::rename(&tmp, &unpacked)
            .map_err(|e| format!("cannot rename {}: {e}", tmp.display()))?;
    }
    link_library(sysroot, &library)
}

fn find_deb(dir: &Path, version: &str) -> Option<PathBuf> {
    // apt-get download escapes ':' in the epoch as %3a; the upstream version is what matters.
    let prefix = "rust-src_";
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.strip_prefix(prefix)
                    .and_then(|rest| rest.strip_suffix("_all.deb"))
                    .is_some_and(|v| debian_upstream(&v.replace("%3a", ":")) == version)
            })
        })
}

/// Points `<sysroot>/lib/rustlib/src/rust/library` at `library`, replacing only a symlink
/// (a real folder there is rustup's own component and is left alone).
fn link_library(sysroot: &Path, library: &Path) -> Res {
    let link = library_link(sysroot);
    if let Some(parent) = link.parent() {
        mkdirs(parent)?;
    }
    match std::fs::symlink_metadata(&link) {
        Ok(m) if m.file_type().is_symlink() => {
            if std::fs::read_link(&link).ok().as_deref() == Some(library) {
                return Ok(());
            }
            std::fs::remove_file(&link)
                .map_err(|e| format!("cannot replace {}: {e}", link.display()))?;
        }
        Ok(_) => {
            return Err(format!(
                "{} exists and is not a symlink; it does not match rustc, remove it by hand",
                link.display()
            ));
        }
        Err(_) => {}
    }
    println!("$ ln -s {} {}", library.display(), link.display());
    symlink(library, &link).map_err(|e| format!("cannot link {}: {e}", link.display()))
}

#[cfg(unix)]
fn symlink(src: &Path, dst: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(src, dst)
}

#[cfg(not(unix))]
fn symlink(_src: &Path, _dst: &Path) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "the build-std fallback needs a Unix host",
    ))
}

/// Major version of `qemu-system-<arch> --version`, if installed.
fn qemu_major(arch: &str) -> Option<u32> {
    let out = Cmd::new(format!("qemu-system-{arch}"))
        .arg("--version")
        .output()
        .ok()?;
    // `QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2+deb13u1~bpo12+1)`
    let v = out.split("version ").nth(1)?;
    v.split('.').next()?.trim().parse().ok()
}

/// QEMU 10 from bookworm-backports: Debian's default 7.2 conflicts with the qemu-utils 10
/// these machines ship, and the boards we emulate need a recent QEMU anyway.
fn qemu() -> Res {
    const MIN_MAJOR: u32 = 10;
    let arm = qemu_major("arm");
    let riscv = qemu_major("riscv32");
    if arm.is_some_and(|m| m >= MIN_MAJOR) && riscv.is_some_and(|m| m >= MIN_MAJOR) {
        println!(
            "setup: qemu-system-arm and qemu-system-riscv32 {} present",
            arm.unwrap_or(0)
        );
        return Ok(());
    }
    if !have("apt-get") {
        return Err(format!(
            "QEMU >= {MIN_MAJOR} (qemu-system-arm, qemu-system-riscv32) is missing; install it"
        ));
    }
    let cache = cache_dir();
    let apt = PrivateApt::new(cache.join("apt-qemu"), &["bookworm-backports main"], true)?;
    apt.update()?;
    let mut install = if is_root() {
        Cmd::new("apt-get")
    } else {
        Cmd::new("sudo").args(["-n", "apt-get"])
    };
    install = install
        .args(apt.opts())
        .args([
            "-q",
            "-y",
            "--no-install-recommends",
            "-t",
            "bookworm-backports",
            "install",
        ])
        .args(["qemu-system-arm", "qemu-system-misc"])
        .env("DEBIAN_FRONTEND", "noninteractive");
    install.run()?;
    match (qemu_major("arm"), qemu_major("riscv32")) {
        (Some(a), Some(r)) if a >= MIN_MAJOR && r >= MIN_MAJOR => {
            println!("setup: QEMU {a} installed");
            Ok(())
        }
        other => Err(format!(
            "QEMU still missing or too old after install: {other:?}"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::debian_upstream;

    #[test]
    fn upstream_part_of_debian_versions() {
        assert_eq!(debian_upstream("1.95.0+dfsg1-2~bpo13+1"), "1.95.0");
        assert_eq!(debian_upstream("1:10.0.2+ds-2+deb13u1~bpo12+1"), "10.0.2");
        assert_eq!(debian_upstream("1.93.1-1"), "1.93.1");
        assert_ne!(debian_upstream("1.95.1+dfsg1-1"), "1.95.0");
    }
}
