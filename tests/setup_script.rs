//! `scripts/setup.sh` decides what to install by package status, never by files.
//!
//! Each test runs the real script with a PATH that holds only fakes of the system tools it
//! calls (`dpkg-query`, `apt-get`, `sudo`, `id`, `rustc`, `cargo`, `node`, `npm`) plus
//! links to `bash`, `dirname` and `env`. The fake dpkg database is a file the fake
//! `apt-get install` appends to, so the whole path — decide, install, check again — runs.
//! A check that looked at files instead of packages (the glob that took
//! `libclang-cpp.so.14` for `libclang.so`) fails here whatever this machine has installed.

use std::collections::BTreeSet;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/setup.sh");

struct Farm {
    root: PathBuf,
}

struct Outcome {
    ok: bool,
    stdout: String,
    stderr: String,
    apt_log: String,
    sudo_log: String,
    npm_log: String,
}

fn real(cmd: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .chain(["/usr/bin".into(), "/bin".into()])
        .map(|d| d.join(cmd))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{cmd} not found"))
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, format!("#!{}\n{body}", real("bash").display())).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

impl Farm {
    /// A PATH of fakes; `installed` are (package, provides) pairs in the fake dpkg database.
    fn new(installed: &[(&str, &str)]) -> Farm {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let root = std::env::temp_dir().join(format!("tessera-setup-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let bin = root.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        for cmd in ["bash", "dirname", "env"] {
            symlink(real(cmd), bin.join(cmd)).unwrap();
        }
        let db: String = installed
            .iter()
            .map(|(p, prov)| format!("install ok installed\t{p}\t{prov}\n"))
            .collect();
        std::fs::write(root.join("dpkg"), db).unwrap();
        // Prints the database whatever the arguments (setup.sh asks for all packages).
        write_exec(
            &bin.join("dpkg-query"),
            "while IFS= read -r l; do printf '%s\\n' \"$l\"; done < \"$FAKE/dpkg\"\n",
        );
        write_exec(
            &bin.join("apt-get"),
            r#"echo "$*" >> "$FAKE/apt.log"
[[ -n ${FAKE_APT_FAIL:-} ]] && exit 100
if [[ $1 == install ]]; then
  for a in "$@"; do
    [[ $a == install || $a == -* ]] && continue
    printf 'install ok installed\t%s\t\n' "$a" >> "$FAKE/dpkg"
  done
fi
exit 0
"#,
        );
        write_exec(&bin.join("id"), "echo \"${FAKE_UID:-0}\"\n");
        write_exec(
            &bin.join("rustc"),
            "echo \"rustc ${FAKE_RUSTC:-1.95.0} (fake 2026-01-01)\"\n",
        );
        write_exec(&bin.join("cargo"), "exit 0\n");
        // `node -e` asks either for the major version or whether playwright-core is current.
        write_exec(
            &bin.join("node"),
            "[[ $* == *process.versions* ]] && { echo \"${FAKE_NODE_MAJOR:-20}\"; exit 0; }\nexit ${FAKE_NODE_RC:-0}\n",
        );
        write_exec(&bin.join("npm"), "echo \"$*\" >> \"$FAKE/npm.log\"\n");
        Farm { root }
    }

    fn with_sudo(self) -> Farm {
        write_exec(
            &self.root.join("bin/sudo"),
            "echo \"$*\" >> \"$FAKE/sudo.log\"\nexec \"$@\"\n",
        );
        self
    }

    fn without(self, cmd: &str) -> Farm {
        std::fs::remove_file(self.root.join("bin").join(cmd)).unwrap();
        self
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Outcome {
        let out = Command::new(self.root.join("bin/bash"))
            .arg(SCRIPT)
            .args(args)
            .env_clear()
            .env("PATH", self.root.join("bin"))
            .env("FAKE", &self.root)
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let read = |f: &str| std::fs::read_to_string(self.root.join(f)).unwrap_or_default();
        Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            apt_log: read("apt.log"),
            sudo_log: read("sudo.log"),
            npm_log: read("npm.log"),
        }
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

fn list(args: &[&str]) -> Vec<String> {
    let out = Farm::new(&[]).run(args, &[]);
    assert!(out.ok, "{}", out.stderr);
    out.stdout.split_whitespace().map(str::to_owned).collect()
}

fn all_but<'a>(pkgs: &'a [String], gone: &str) -> Vec<(&'a str, &'a str)> {
    pkgs.iter()
        .filter(|p| *p != gone)
        .map(|p| (p.as_str(), ""))
        .collect()
}

#[test]
fn the_package_lists_hold_what_the_build_and_the_tests_use() {
    let build = list(&["--list"]);
    let test = list(&["--list", "--test"]);
    for p in [
        "build-essential",
        "cmake",
        "nasm",
        "pkg-config",
        "libdav1d-dev",
        "libvpx-dev",
        "libclang-dev",
    ] {
        assert!(
            build.contains(&p.to_owned()),
            "build set lacks {p}: {build:?}"
        );
    }
    for p in [
        "chromium",
        "nodejs",
        "npm",
        "iproute2",
        "util-linux",
        "mount",
        "ffmpeg",
        "python3",
        "sip-tester",
        "redis-server",
        "baresip-core",
        "kamailio",
        "firefox-esr",
    ] {
        assert!(test.contains(&p.to_owned()), "test set lacks {p}: {test:?}");
        assert!(
            !build.contains(&p.to_owned()),
            "run.sh would install test package {p}"
        );
    }
    assert!(
        build.iter().all(|p| test.contains(p)),
        "test set must include the build set"
    );
}

#[test]
fn each_missing_package_is_found_and_installed() {
    let test = list(&["--list", "--test"]);
    let build = list(&["--list"]);
    for gone in &test {
        let farm = Farm::new(&all_but(&test, gone));
        let out = farm.run(&["--print-missing", "--test"], &[]);
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(out.stdout, *gone, "only {gone} is missing");
        assert!(
            out.apt_log.is_empty(),
            "--print-missing installed something"
        );

        // run.sh's set: a missing test package is not its business.
        let out = farm.run(&["--print-missing"], &[]);
        let expect = if build.contains(gone) {
            gone.as_str()
        } else {
            ""
        };
        assert_eq!(out.stdout, expect, "build set with {gone} missing");

        // The real path as root: update, install exactly that package, check again.
        let out = farm.run(&["--test"], &[]);
        assert!(out.ok, "{gone}: {}", out.stderr);
        let lines: Vec<&str> = out.apt_log.lines().collect();
        assert_eq!(lines.len(), 2, "{gone}: {}", out.apt_log);
        assert!(lines[0].starts_with("update"), "{}", out.apt_log);
        assert!(lines[1].starts_with("install"), "{}", out.apt_log);
        let installed: Vec<&str> = lines[1]
            .split(' ')
            .filter(|a| !a.starts_with('-'))
            .skip(1)
            .collect();
        assert_eq!(installed, [gone.as_str()], "{}", out.apt_log);
        assert!(
            out.stderr.contains(&format!("installing {gone}")),
            "{}",
            out.stderr
        );

        // Now present: nothing more to do.
        let out = farm.run(&["--test"], &[]);
        assert!(out.ok, "{}", out.stderr);
        assert_eq!(
            out.apt_log.lines().count(),
            2,
            "installed twice: {}",
            out.apt_log
        );
    }
}

#[test]
fn nothing_missing_installs_nothing() {
    let test = list(&["--list", "--test"]);
    let farm = Farm::new(&all_but(&test, ""));
    let out = farm.run(&["--test"], &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(out.apt_log, "");
    assert_eq!(farm.run(&["--print-missing", "--test"], &[]).stdout, "");
}

#[test]
fn look_alike_packages_do_not_count_but_providers_do() {
    let build = list(&["--list"]);
    let mut db = all_but(&build, "libclang-dev");
    // What fooled the old glob check: libclang-cpp14 ships /usr/lib/llvm-14/lib/libclang-cpp.so.14.
    db.push(("libclang-cpp14", ""));
    db.push(("libclang1-14", ""));
    let out = Farm::new(&db).run(&["--print-missing"], &[]);
    assert_eq!(out.stdout, "libclang-dev");

    // NodeSource's nodejs provides npm (and conflicts with Debian's npm): npm is present.
    let test = list(&["--list", "--test"]);
    let mut db = all_but(&test, "npm");
    db.retain(|(p, _)| *p != "nodejs");
    db.push((
        "nodejs",
        "nodejs-dev, nodejs-doc, nodejs-legacy, npm (= 10.9.2)",
    ));
    let out = Farm::new(&db).run(&["--print-missing", "--test"], &[]);
    assert_eq!(out.stdout, "");
}

#[test]
fn removed_packages_with_config_files_left_count_as_missing() {
    let build = list(&["--list"]);
    let farm = Farm::new(&all_but(&build, "nasm"));
    let db = farm.root.join("dpkg");
    let mut text = std::fs::read_to_string(&db).unwrap();
    text.push_str("deinstall ok config-files\tnasm\t\n");
    std::fs::write(&db, text).unwrap();
    assert_eq!(farm.run(&["--print-missing"], &[]).stdout, "nasm");
}

#[test]
fn without_root_or_sudo_it_stops_with_one_line_naming_the_packages() {
    let build = list(&["--list"]);
    let farm = Farm::new(&all_but(&build, "cmake"));
    let mut db = std::fs::read_to_string(farm.root.join("dpkg")).unwrap();
    db = db.replace("\tnasm\t", "\tnasm-removed\t");
    std::fs::write(farm.root.join("dpkg"), db).unwrap();
    let out = farm.run(&[], &[("FAKE_UID", "1000")]);
    assert!(!out.ok);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("cmake nasm"), "{}", out.stderr);
    assert!(out.stderr.contains("not root, no sudo"), "{}", out.stderr);
    assert_eq!(out.apt_log, "", "tried to install without rights");

    // With sudo it installs through sudo.
    let farm = farm.with_sudo();
    let out = farm.run(&[], &[("FAKE_UID", "1000")]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.sudo_log.contains("apt-get install"), "{}", out.sudo_log);
    assert!(out.apt_log.contains("cmake nasm"), "{}", out.apt_log);
}

#[test]
fn a_failed_install_or_no_apt_stops_with_a_clear_line() {
    let build = list(&["--list"]);
    let farm = Farm::new(&all_but(&build, "libdav1d-dev"));
    let out = farm.run(&[], &[("FAKE_APT_FAIL", "1")]);
    assert!(!out.ok);
    assert!(
        out.stderr
            .contains("failed; missing Debian packages: libdav1d-dev"),
        "{}",
        out.stderr
    );

    let farm = farm.without("apt-get");
    let out = farm.run(&[], &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("libdav1d-dev") && out.stderr.contains("no apt-get"),
        "{}",
        out.stderr
    );

    let farm = Farm::new(&[]).without("dpkg-query");
    let out = farm.run(&[], &[]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains("no dpkg-query") && out.stderr.contains("TESSERA_SKIP_SETUP"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_rust_toolchain_is_checked_against_rust_version() {
    let test = list(&["--list", "--test"]);
    let farm = Farm::new(&all_but(&test, ""));
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let need = manifest
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("Cargo.toml has a rust-version");
    let out = farm.run(&[], &[("FAKE_RUSTC", "1.70.0")]);
    assert!(!out.ok);
    assert!(
        out.stderr.contains(&format!(
            "Rust {need} or newer is needed, found rustc 1.70.0"
        )),
        "{}",
        out.stderr
    );
    let out = farm.run(&[], &[("FAKE_RUSTC", need)]);
    assert!(out.ok, "{}", out.stderr);

    let farm = farm.without("rustc");
    let out = farm.run(&[], &[]);
    assert!(!out.ok);
    assert!(out.stderr.contains("rustup"), "{}", out.stderr);
}

#[test]
fn the_npm_test_dependencies_are_installed_only_when_out_of_date() {
    let test = list(&["--list", "--test"]);
    let farm = Farm::new(&all_but(&test, ""));
    let out = farm.run(&["--test"], &[]);
    assert!(out.ok, "{}", out.stderr);
    assert_eq!(
        out.npm_log, "",
        "installed playwright-core although up to date"
    );
    let out = farm.run(&[], &[("FAKE_NODE_RC", "1")]);
    assert_eq!(out.npm_log, "", "run.sh's set must not touch npm");
    let out = farm.run(&["--test"], &[("FAKE_NODE_RC", "1")]);
    assert!(out.ok, "{}", out.stderr);
    assert!(out.npm_log.starts_with("ci "), "{}", out.npm_log);
    let kinds: BTreeSet<&str> = out.npm_log.split_whitespace().collect();
    assert!(!kinds.contains("--silent"), "npm errors must stay visible");
}

#[test]
fn an_old_node_stops_the_test_setup_with_one_line() {
    let test = list(&["--list", "--test"]);
    let farm = Farm::new(&all_but(&test, ""));
    let out = farm.run(&["--test"], &[("FAKE_NODE_MAJOR", "16")]);
    assert!(!out.ok);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("Node.js 18 or newer"), "{}", out.stderr);
    assert!(
        farm.run(&[], &[("FAKE_NODE_MAJOR", "16")]).ok,
        "run.sh does not need Node"
    );
    assert!(farm.run(&["--test"], &[("FAKE_NODE_MAJOR", "18")]).ok);
}
