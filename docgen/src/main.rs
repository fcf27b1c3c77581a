//! `shield-docgen OUT_DIR`: writes `man/*.1` (one page per command and
//! subcommand) and `completions/` for bash, zsh and fish. Run through
//! `cargo xtask docs`.
#![warn(unused_crate_dependencies)]

use std::{fs, path::Path};

use anyhow::Context as _;
use clap_complete::Shell;

fn main() -> anyhow::Result<()> {
    let out = std::env::args_os()
        .nth(1)
        .context("usage: shield-docgen OUT_DIR")?;
    let out = Path::new(&out);
    let written = generate(out)?;
    for p in written {
        println!("{p}");
    }
    Ok(())
}

fn generate(out: &Path) -> anyhow::Result<Vec<String>> {
    let man = out.join("man");
    let comp = out.join("completions");
    fs::create_dir_all(&man)?;
    fs::create_dir_all(&comp)?;
    let mut written = Vec::new();
    for cmd in [
        shield_user::agent::cli::command(),
        shield_user::control::cli::command(),
    ] {
        let name = cmd.get_name().to_string();
        // One page per (sub)command, named like git's: shieldctl-ban-add.1.
        clap_mangen::generate_to(cmd.clone(), &man)
            .with_context(|| format!("man pages for {name}"))?;
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let path = clap_complete::generate_to(shell, &mut cmd.clone(), &name, &comp)
                .with_context(|| format!("{shell} completions for {name}"))?;
            written.push(path.display().to_string());
        }
    }
    for e in fs::read_dir(&man)? {
        written.push(e?.path().display().to_string());
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_completions_cover_every_command() {
        let dir = std::env::temp_dir().join(format!("shield-docgen-{}", std::process::id()));
        let files = generate(&dir).unwrap();
        let has = |suffix: &str| files.iter().any(|f| f.ends_with(suffix));
        assert!(
            has("man/shieldctl.1") && has("man/shield-agent.1"),
            "{files:?}"
        );
        assert!(has("man/shieldctl-ban-add.1"), "{files:?}");
        assert!(has("shieldctl.bash") && has("_shieldctl") && has("shieldctl.fish"));
        let page = fs::read_to_string(dir.join("man/shieldctl-ban-add.1")).unwrap();
        assert!(page.contains("ttl"), "{page}");
        let bash = fs::read_to_string(dir.join("completions/shieldctl.bash")).unwrap();
        assert!(bash.contains("dry-run"), "subcommands are completed");
        fs::remove_dir_all(&dir).unwrap();
    }
}
