//! Where an installation puts each file, shared by `cargo xtask package`
//! (the .deb) and `cargo xtask install` (source installs), so both lay
//! shield out the same way.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::cmd;

/// Files another part of the project provides that may not exist yet (the
/// dashboard and alert rules): installed when present, skipped with a
/// notice when not.
pub const OPTIONAL: &[(&str, &str)] = &[
    (
        "packaging/grafana/shield.json",
        "share/shield/grafana/shield.json",
    ),
    (
        "packaging/prometheus/shield-alerts.yml",
        "share/shield/prometheus/shield-alerts.yml",
    ),
];

pub const UNIT: &str = "packaging/systemd/shield-agent.service";
pub const CONFIG: &str = "packaging/shield.toml";
/// Where the config is installed, below the root.
pub const CONFIG_DEST: &str = "etc/shield/shield.toml";
/// The config's mode: feed URLs may carry credentials, so not for every
/// local user. Group `shield` gets it once the group exists (postinst,
/// [`restrict_config`]).
pub const CONFIG_MODE: u32 = 0o640;

/// One file to install: its bytes, its path below the root, its mode.
pub struct Entry {
    pub bytes: Vec<u8>,
    pub dest: PathBuf,
    pub mode: u32,
}

/// Builds the file list for an installation under `prefix` (`/usr` for the
/// .deb, `/usr/local` by default from source). `bins` adds the release
/// binaries (cargo-deb packages those itself).
pub fn entries(prefix: &Path, bins: Option<&Path>) -> anyhow::Result<Vec<Entry>> {
    let root = cmd::root();
    let rel = |p: &Path| p.strip_prefix("/").unwrap_or(p).to_path_buf();
    let prefix_rel = rel(prefix);
    let mut out = Vec::new();

    if let Some(dir) = bins {
        for b in ["shield-agent", "shieldctl"] {
            let src = dir.join(b);
            out.push(Entry {
                bytes: fs::read(&src).with_context(|| format!("reading {}", src.display()))?,
                dest: prefix_rel.join("bin").join(b),
                mode: 0o755,
            });
        }
    }

    // The unit names the binary by its installed path.
    let unit = fs::read_to_string(root.join(UNIT))?;
    let agent = prefix.join("bin/shield-agent");
    let unit = unit.replace("/usr/bin/shield-agent", &agent.to_string_lossy());
    out.push(Entry {
        bytes: unit.into_bytes(),
        dest: prefix_rel.join("lib/systemd/system/shield-agent.service"),
        mode: 0o644,
    });
    out.push(Entry {
        bytes: fs::read(root.join(CONFIG))?,
        dest: PathBuf::from(CONFIG_DEST),
        mode: CONFIG_MODE,
    });

    // Man pages and completions from the clap definitions.
    let docs = root.join("target/xtask/docs");
    let _ = fs::remove_dir_all(&docs);
    cmd::output(
        Command::new("cargo")
            .args(["run", "--quiet", "--package", "shield-docgen", "--"])
            .arg(&docs)
            .current_dir(&root),
    )?;
    let mut pages: Vec<PathBuf> = fs::read_dir(docs.join("man"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    pages.sort();
    for page in pages {
        let name = page
            .file_name()
            .context("a man page without a name")?
            .to_string_lossy()
            .into_owned();
        out.push(Entry {
            bytes: gzip(&page)?,
            dest: prefix_rel.join("share/man/man1").join(format!("{name}.gz")),
            mode: 0o644,
        });
    }
    // Debian's zsh reads vendor completions from its own directory; other
    // prefixes use zsh's site-functions.
    let zsh_dir = if prefix == Path::new("/usr") {
        "share/zsh/vendor-completions"
    } else {
        "share/zsh/site-functions"
    };
    for bin in ["shield-agent", "shieldctl"] {
        let comp = docs.join("completions");
        for (src, dest) in [
            (
                format!("{bin}.bash"),
                format!("share/bash-completion/completions/{bin}"),
            ),
            (format!("_{bin}"), format!("{zsh_dir}/_{bin}")),
            (
                format!("{bin}.fish"),
                format!("share/fish/vendor_completions.d/{bin}.fish"),
            ),
        ] {
            let path = comp.join(&src);
            out.push(Entry {
                bytes: fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
                dest: prefix_rel.join(dest),
                mode: 0o644,
            });
        }
    }

    for (src, dest) in OPTIONAL {
        let path = root.join(src);
        if path.exists() {
            out.push(Entry {
                bytes: fs::read(&path)?,
                dest: prefix_rel.join(dest),
                mode: 0o644,
            });
        } else {
            eprintln!("xtask: {src} does not exist yet; installing without it");
        }
    }
    Ok(out)
}

/// Writes `entries` below `root`. With `keep_config`, an existing config
/// file is left alone and the new one written beside it as `.new` (what
/// dpkg does for a changed conffile).
pub fn write<E: std::borrow::Borrow<Entry>>(
    root: &Path,
    entries: &[E],
    keep_config: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for e in entries {
        let e: &Entry = e.borrow();
        let mut path = root.join(&e.dest);
        if keep_config && e.dest.starts_with("etc") && path.exists() {
            if fs::read(&path)? == e.bytes {
                continue;
            }
            let mut name = path.file_name().unwrap_or_default().to_os_string();
            name.push(".new");
            path.set_file_name(name);
            eprintln!(
                "xtask: {} exists and differs; the shipped version is at {}",
                root.join(&e.dest).display(),
                path.display()
            );
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        // Replace rather than overwrite in place: a running binary cannot be
        // opened for writing (ETXTBSY), but it can be renamed over.
        let tmp = path.with_extension("xtask-tmp");
        fs::write(&tmp, &e.bytes).with_context(|| format!("writing {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(e.mode))?;
        fs::rename(&tmp, &path).with_context(|| format!("installing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// What the .deb's postinst does to an installed config: group `shield`
/// when it is still root's (another group was someone's choice), and no
/// group write or world access.
pub fn restrict_config(path: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let md = fs::metadata(path).with_context(|| format!("{}", path.display()))?;
    if md.gid() == 0 {
        cmd::run(Command::new("chgrp").arg("shield").arg(path))?;
    }
    let mode = md.mode() & 0o7777 & !0o027;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(())
}

fn gzip(path: &Path) -> anyhow::Result<Vec<u8>> {
    // -n: no name or time stamp inside, so the package is reproducible.
    let out = Command::new("gzip")
        .args(["-9", "-n", "-c"])
        .arg(path)
        .output()
        .context("running gzip")?;
    if !out.status.success() {
        bail!("gzip {} failed", path.display());
    }
    Ok(out.stdout)
}
