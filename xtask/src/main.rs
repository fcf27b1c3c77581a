//! `cargo xtask`: the project's own build, test and benchmark commands.
//!
//! Every command that needs tools installs or checks them first, so a fresh
//! clone on a fresh machine needs nothing but rustup and root.
#![warn(unused_crate_dependencies)]

mod bench;
mod cmd;
mod demo;
mod fuzz;
mod install;
mod layout;
mod package;
mod setup;
mod stages;
mod test;
mod vm;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test and benchmark shield",
    long_about = "Build, test and benchmark shield.\n\n\
        Run as root on Debian with rustup: `setup` installs what is missing \
        (nightly rust-src, bpf-linker, Debian packages, bpffs) and every other \
        command runs it first."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install or check the toolchain, bpf-linker, Debian packages, bpffs and kernel features.
    Setup,
    /// Build the XDP object and the userspace crates (release).
    Build,
    /// Start the shield on a lab network of its own, attack it, show live what is dropped and why, clean up.
    Demo(demo::DemoArgs),
    /// Run every test: fmt, clippy, host unit tests, program tests, netns integration tests.
    Test(test::TestArgs),
    /// Measure shield against an empty program, xdp-filter and nftables: per packet, rate accuracy, scaling, veth throughput, feeds, control plane; writes docs/BENCHMARKS.md.
    Bench(bench::BenchArgs),
    /// Fuzz the feed parsers, the config, the control protocol and CIDRs with cargo-fuzz (nightly).
    Fuzz(fuzz::FuzzArgs),
    /// Build a .deb (cargo-deb): binaries, systemd unit, default config, man pages, completions, dashboards.
    Package(package::PackageArgs),
    /// Install the .deb on Debian 12 in a VM (QEMU, systemd as PID 1) and test it there: real packets, restarts, watchdog, reboot, removal, program tests.
    VmTest(vm::VmTestArgs),
    /// Install from source with the .deb's layout (`--prefix`, `--destdir`).
    Install(install::InstallArgs),
    /// Generate man pages and bash/zsh/fish completions for shield-agent and shieldctl.
    Docs {
        /// Where to write `man/` and `completions/`.
        #[arg(long, default_value = "target/docs")]
        out: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Setup => setup::run(),
        Command::Build => {
            setup::run()?;
            cmd::cargo(&[
                "build",
                "--release",
                "--workspace",
                "--exclude",
                "shield-ebpf",
            ])
        }
        Command::Test(args) => test::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Bench(args) => bench::run(&args),
        Command::Fuzz(args) => fuzz::run(&args),
        Command::Package(args) => package::run(&args),
        Command::Install(args) => install::run(&args),
        Command::VmTest(args) => vm::run(&args),
        Command::Docs { out } => {
            setup::run()?;
            let out = cmd::root().join(out);
            cmd::cargo(&[
                "run",
                "--quiet",
                "--package",
                "shield-docgen",
                "--",
                &out.to_string_lossy(),
            ])?;
            eprintln!("man pages and completions in {}", out.display());
            Ok(())
        }
    }
}
