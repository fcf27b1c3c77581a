//! `cargo xtask package` builds a .deb; this looks inside it with dpkg-deb
//! and runs what it ships: both binaries, the default config through the
//! shipped `shield-agent check-config`, the unit through `systemd-analyze
//! verify` (with the man pages it names, from the package), the man pages
//! through man, the completions through bash, the maintainer scripts
//! through `sh -n`.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
};

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = cmd.output().unwrap_or_else(|e| panic!("{shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&run(cmd).stdout).into_owned()
}

/// A scratch directory, removed even when the test panics.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The .deb, built once per test process with the real `cargo xtask
/// package`, into the workspace's target directory.
fn deb() -> &'static Path {
    static DEB: OnceLock<PathBuf> = OnceLock::new();
    DEB.get_or_init(|| {
        let out = workspace().join("target/xtask/deb-test");
        let _ = fs::remove_dir_all(&out);
        build_deb(&out)
    })
}

fn build_deb(out: &Path) -> PathBuf {
    run(Command::new("cargo")
        // The dev profile: the binaries `cargo xtask test` built already
        // (a release build would add minutes to every CI run).
        .args(["xtask", "package", "--profile", "dev", "--out"])
        .arg(out)
        .current_dir(workspace()));
    let debs: Vec<PathBuf> = fs::read_dir(out)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "deb"))
        .collect();
    assert_eq!(
        debs.len(),
        1,
        "expected one .deb in {}: {debs:?}",
        out.display()
    );
    debs[0].clone()
}

#[test]
fn the_deb_ships_what_it_says_and_it_works() {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("shield-deb-test-{}", std::process::id())));
    let _ = fs::remove_dir_all(&scratch.0);
    fs::create_dir_all(&scratch.0).unwrap();
    let deb = deb();

    // Control data.
    let info = stdout(Command::new("dpkg-deb").arg("--info").arg(deb));
    for field in [
        "Package: shield",
        "Version: 0.1.0",
        "Architecture: amd64",
        "Section: net",
    ] {
        assert!(
            info.contains(field),
            "no `{field}` in dpkg-deb --info:\n{info}"
        );
    }
    let depends = info
        .lines()
        .find(|l| l.trim_start().starts_with("Depends:"))
        .unwrap_or_else(|| panic!("no Depends in:\n{info}"));
    assert!(
        depends.contains("libc6") && depends.contains("passwd"),
        "Depends should name libc6 (found by cargo-deb) and passwd (groupadd): {depends}"
    );
    let control = scratch.0.join("control");
    run(Command::new("dpkg-deb")
        .arg("--control")
        .arg(deb)
        .arg(&control));
    let conffiles = fs::read_to_string(control.join("conffiles")).unwrap_or_default();
    assert_eq!(
        conffiles.trim(),
        "/etc/shield/shield.toml",
        "the config must be the one conffile"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = control.join(script);
        run(Command::new("sh").arg("-n").arg(&path));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains("set -e"), "{script} should stop on errors");
    }
    let postinst = fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("groupadd --system shield") && postinst.contains("daemon-reload"),
        "postinst must create the shield group and reload systemd:\n{postinst}"
    );
    let commands: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(
        !commands
            .iter()
            .any(|l| l.contains("enable") || l.contains("systemctl start")),
        "a fresh install must not start the agent (it needs `interfaces` first):\n{postinst}"
    );

    // The file list, with modes.
    let listing = stdout(Command::new("dpkg-deb").arg("--contents").arg(deb));
    let mode_of = |path: &str| -> String {
        listing
            .lines()
            .find(|l| l.ends_with(&format!(" .{path}")))
            .unwrap_or_else(|| panic!("{path} is not in the package:\n{listing}"))
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    for bin in ["/usr/bin/shield-agent", "/usr/bin/shieldctl"] {
        assert_eq!(mode_of(bin), "-rwxr-xr-x", "{bin}");
    }
    // The config may carry feed credentials: not for every local user.
    // (The group `shield` is the postinst's to give: dpkg unpacks before
    // the group exists.)
    let config_line = listing
        .lines()
        .find(|l| l.ends_with(" ./etc/shield/shield.toml"))
        .unwrap_or_else(|| panic!("no config in:\n{listing}"));
    let mut cols = config_line.split_whitespace();
    let (mode, owner) = (cols.next(), cols.next());
    assert!(
        mode == Some("-rw-r-----") && matches!(owner, Some("0/0" | "root/root")),
        "the config should ship 0640 root:root: {config_line}"
    );
    let mut files = vec![
        "/usr/lib/systemd/system/shield-agent.service".to_string(),
        "/usr/share/man/man1/shield-agent.1.gz".into(),
        "/usr/share/man/man1/shieldctl.1.gz".into(),
        "/usr/share/man/man1/shieldctl-ban-add.1.gz".into(),
        "/usr/share/doc/shield/README.md".into(),
        "/usr/share/doc/shield/configuration.md".into(),
    ];
    for bin in ["shield-agent", "shieldctl"] {
        files.push(format!("/usr/share/bash-completion/completions/{bin}"));
        files.push(format!("/usr/share/zsh/vendor-completions/_{bin}"));
        files.push(format!("/usr/share/fish/vendor_completions.d/{bin}.fish"));
    }
    // The dashboard and alert rules ship when the repository has them.
    for (src, dest) in [
        (
            "packaging/grafana/shield.json",
            "/usr/share/shield/grafana/shield.json",
        ),
        (
            "packaging/prometheus/shield-alerts.yml",
            "/usr/share/shield/prometheus/shield-alerts.yml",
        ),
    ] {
        if workspace().join(src).exists() {
            files.push(dest.into());
        }
    }
    for f in &files {
        assert_eq!(mode_of(f), "-rw-r--r--", "{f}");
    }

    let root = scratch.0.join("root");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root));

    // The binaries run.
    for bin in ["shield-agent", "shieldctl"] {
        let v = stdout(Command::new(root.join("usr/bin").join(bin)).arg("--version"));
        assert!(v.contains("0.1.0"), "{bin} --version: {v}");
    }
    let agent = root.join("usr/bin/shield-agent");

    // The shipped config is accepted as it is, with its one required edit,
    // and with every example in it uncommented.
    let config = root.join("etc/shield/shield.toml");
    let check = |path: &Path| {
        let out = Command::new(&agent)
            .arg("check-config")
            .arg(path)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };
    let (code, text) = check(&config);
    assert_eq!(code, Some(0), "check-config on the shipped config:\n{text}");
    let shipped = fs::read_to_string(&config).unwrap();
    let edited = scratch.0.join("edited.toml");
    fs::write(&edited, shipped.replace("# interfaces = ", "interfaces = ")).unwrap();
    let (code, text) = check(&edited);
    assert_eq!(code, Some(0), "with interfaces set:\n{text}");
    let every_example: String = shipped
        .lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest) if is_toml(rest) => rest,
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let uncommented = scratch.0.join("uncommented.toml");
    fs::write(&uncommented, &every_example).unwrap();
    let (code, text) = check(&uncommented);
    assert_eq!(
        code,
        Some(0),
        "every example in the shipped config, uncommented:\n{every_example}\n{text}"
    );
    // ... and check-config is not accepting anything: a typo is refused.
    let typo = scratch.0.join("typo.toml");
    fs::write(&typo, every_example.replace("packet_burst", "packet_brust")).unwrap();
    assert_eq!(check(&typo).0, Some(2), "a misspelt key must be refused");

    // The unit, as installed, with the man pages it names.
    let unit = root.join("usr/lib/systemd/system/shield-agent.service");
    let unit_text = fs::read_to_string(&unit).unwrap();
    assert!(unit_text.contains("ExecStart=/usr/bin/shield-agent --config /etc/shield/shield.toml"));
    let unit_copy = scratch.0.join("shield-agent.service");
    fs::write(
        &unit_copy,
        unit_text.replace("/usr/bin/shield-agent", &agent.to_string_lossy()),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=yes"])
        .arg(&unit_copy)
        .env("MANPATH", root.join("usr/share/man"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains("shield-agent.service"),
        "systemd-analyze verify of the packaged unit:\n{err}"
    );

    // Man pages render.
    for page in ["shield-agent.1.gz", "shieldctl-ban-add.1.gz"] {
        let raw = stdout(
            Command::new("man")
                .arg("-l")
                .arg(root.join("usr/share/man/man1").join(page))
                .env("MANWIDTH", "80"),
        );
        // Bold and underline come as overstrikes (`N\x08N`): undo them.
        let mut text = String::new();
        for c in raw.chars() {
            if c == '\x08' {
                text.pop();
            } else {
                text.push(c);
            }
        }
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{page}:\n{text}"
        );
    }

    // Bash loads the completion and registers it.
    let comp = root.join("usr/share/bash-completion/completions/shieldctl");
    let registered = stdout(Command::new("bash").arg("-c").arg(format!(
        "source '{}' && complete -p shieldctl",
        comp.display()
    )));
    assert!(registered.contains("shieldctl"), "{registered}");
}

/// A line that is a TOML key or table header once its `# ` is removed
/// (as opposed to a comment in prose).
fn is_toml(line: &str) -> bool {
    let line = line.trim_end();
    if line.starts_with('[') {
        return line.ends_with(']') || line.contains("]  ") || line.contains("] #");
    }
    match line.split_once(" = ") {
        Some((key, _)) => key.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
        None => false,
    }
}

#[test]
fn dpkg_installs_keeps_the_edited_config_removes_and_purges() {
    // A throwaway root: an overlay of this host's / with a tmpfs on top, in
    // a mount namespace of its own. dpkg and the maintainer scripts run for
    // real in it (chroot); the host's files, groups and dpkg database stay
    // untouched. /sys is not mounted inside, so the prerm's detach cannot
    // reach a shield running on this host.
    let deb = deb();
    let scratch =
        Scratch(std::env::temp_dir().join(format!("shield-dpkg-test-{}", std::process::id())));
    fs::create_dir_all(&scratch.0).unwrap();
    let d = scratch.0.display();
    let script = format!(
        r#"set -e
mount --make-rprivate /
mount -t tmpfs tmpfs {d}
mkdir -p {d}/upper {d}/work {d}/root
mount -t overlay overlay -o lowerdir=/,upperdir={d}/upper,workdir={d}/work {d}/root
mount -t proc proc {d}/root/proc
mount --rbind /dev {d}/root/dev
cp '{deb}' {d}/root/tmp/shield.deb
in_root() {{ chroot {d}/root "$@"; }}
echo '== install'
in_root dpkg -i /tmp/shield.deb
in_root getent group shield
in_root stat -c '%a %n' /var/lib/shield
in_root stat -c 'config %a %U:%G' /etc/shield/shield.toml
in_root shield-agent check-config /etc/shield/shield.toml
echo '== edit the config, reinstall over a world-readable one (older packages shipped it 0644)'
sed -i 's/^# interfaces = /interfaces = /' {d}/root/etc/shield/shield.toml
chmod 0644 {d}/root/etc/shield/shield.toml
chgrp root {d}/root/etc/shield/shield.toml
in_root dpkg -i /tmp/shield.deb
grep '^interfaces = ' {d}/root/etc/shield/shield.toml
in_root stat -c 'reinstalled config %a %U:%G' /etc/shield/shield.toml
echo '== remove'
in_root dpkg -r shield
test ! -e {d}/root/usr/bin/shield-agent && echo 'binaries gone'
grep -q '^interfaces = ' {d}/root/etc/shield/shield.toml && echo 'config kept'
echo '== purge'
in_root dpkg -P shield
test ! -e {d}/root/etc/shield/shield.toml && echo 'config gone'
test ! -e {d}/root/var/lib/shield && echo 'state gone'
in_root getent group shield >/dev/null && echo 'group kept'
"#,
        deb = deb.display()
    );
    let text = stdout(Command::new("unshare").args(["--mount", "sh", "-c", &script]));
    for expected in [
        "Setting up shield (0.1.0-1)",
        "shield:x:",
        "700 /var/lib/shield",
        "config 640 root:shield",
        "reinstalled config 640 root:shield",
        "/etc/shield/shield.toml: ok",
        "interfaces = [\"eth0\"]",
        "binaries gone",
        "config kept",
        "config gone",
        "state gone",
        "group kept",
    ] {
        assert!(text.contains(expected), "no `{expected}` in:\n{text}");
    }
    // Nothing reached the host.
    assert!(
        !Command::new("dpkg-query")
            .args(["-W", "shield"])
            .output()
            .unwrap()
            .status
            .success(),
        "the package reached the host's dpkg database"
    );
}

/// Every regular file below `dir`, as absolute paths of the installed system.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(format!("/{}", p.strip_prefix(dir).unwrap().display()));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_source_install_has_the_debs_layout_and_keeps_an_edited_config() {
    let scratch =
        Scratch(std::env::temp_dir().join(format!("shield-install-test-{}", std::process::id())));
    let _ = fs::remove_dir_all(&scratch.0);
    let install = || {
        String::from_utf8_lossy(
            &run(Command::new("cargo")
                .args([
                    "xtask",
                    "install",
                    "--profile",
                    "dev",
                    "--prefix",
                    "/usr",
                    "--destdir",
                ])
                .arg(&scratch.0)
                .current_dir(workspace()))
            .stderr,
        )
        .into_owned()
    };
    install();
    let config = scratch.0.join("etc/shield/shield.toml");
    let config_mode = fs::metadata(&config).unwrap().permissions().mode() & 0o7777;
    assert_eq!(config_mode, 0o640, "the source install's config mode");
    let installed = files_below(&scratch.0);
    let listing = stdout(Command::new("dpkg-deb").arg("--contents").arg(deb()));
    let mut packaged: Vec<String> = listing
        .lines()
        .filter(|l| !l.starts_with('d'))
        .filter_map(|l| l.split_whitespace().last())
        .map(|p| p.trim_start_matches('.').to_string())
        // cargo-deb adds the docs and the copyright file itself.
        .filter(|p| !p.starts_with("/usr/share/doc/"))
        .collect();
    packaged.sort();
    assert_eq!(
        installed, packaged,
        "the source install and the .deb differ"
    );

    // An operator's edit survives a reinstall; the shipped file goes beside it.
    let edited = fs::read_to_string(&config)
        .unwrap()
        .replace("# interfaces = ", "interfaces = ");
    fs::write(&config, &edited).unwrap();
    let log = install();
    assert_eq!(fs::read_to_string(&config).unwrap(), edited);
    assert!(
        scratch.0.join("etc/shield/shield.toml.new").exists(),
        "no shield.toml.new beside the edited config:\n{log}"
    );
    let new_mode = fs::metadata(scratch.0.join("etc/shield/shield.toml.new"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(new_mode, 0o640, "shield.toml.new's mode");
}
