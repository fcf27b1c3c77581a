//! The guest's side of `cargo xtask vm-test` (xtask/src/vm): runs inside a
//! Debian VM with systemd as PID 1, as root.
//!
//! - `vm-guest lab`: at every boot, before shield-agent, makes the lab
//!   network (a client namespace joined to this host by a veth pair).
//! - `vm-guest run`: after boot, runs this boot's scenarios in order and
//!   prints one line per scenario to its standard output, which the unit
//!   sends to the VM's second serial port, a file on the host: `PASS name`,
//!   `FAIL name: why`, and `DONE n passed` when the last boot is over. It
//!   then reboots the VM (between the two boots) or powers it off.
//! - `vm-guest features`: which of the kernel features shield uses this
//!   kernel has (any host; the VM run prints it too).
//!
//! Every scenario drives shield as an operator would: apt, systemctl,
//! shieldctl, kill. What it checks, it checks with real packets from the
//! client namespace.

mod features;
mod guest;
mod scenarios;

use std::process::ExitCode;

fn main() -> ExitCode {
    match std::env::args().nth(1).as_deref() {
        Some("lab") => {
            guest::make_lab();
            ExitCode::SUCCESS
        }
        Some("run") => scenarios::run_this_boot(),
        Some("features") => {
            for line in scenarios::feature_lines() {
                println!("{line}");
            }
            ExitCode::SUCCESS
        }
        _ => {
            eprintln!(
                "usage: vm-guest lab|run|features (the VM test's guest driver; see cargo xtask vm-test)"
            );
            ExitCode::from(2)
        }
    }
}
