//! The kernel features shield uses, probed one by one on the running
//! kernel: the rows of docs/OPERATIONS.md's "Kernels tested" table.
//! `vm-guest features` runs on any host, the build machine's own kernel
//! included.

use std::path::PathBuf;

use shield_tests::lab::Lab;
use shield_user::dataplane::{AttachMode, Dataplane, KernelLogLevel, LoadOptions, features, pins};

/// (feature, whether this kernel has it, how that was seen).
pub type Row = (&'static str, bool, String);

pub fn probe() -> Vec<Row> {
    // The agent's own probes: what it checks when a load fails.
    let mut rows: Vec<Row> = features::REQUIRED
        .iter()
        .chain([&features::RAW_SYNCOOKIES])
        .map(|f| {
            (
                f.name,
                f.present(),
                format!(
                    "aya's probe; Linux has it since {}",
                    f.since.trim_start_matches("Linux ")
                ),
            )
        })
        .collect();
    rows.extend(with_the_program());
    rows.push(with_its_log_on());
    rows
}

/// Whether the verifier takes shield's program with its log at debug
/// (longer: shield-ebpf/src/rare.rs). Optional: where it does not, the
/// agent loads the program with its log off (docs/OPERATIONS.md, "Kernel
/// log"), so a "no" here fails nothing.
fn with_its_log_on() -> Row {
    const NAME: &str = "shield's program with its log at debug (optional)";
    let opts = LoadOptions {
        kernel_log: Some(KernelLogLevel::Debug),
        ..LoadOptions::default()
    };
    match Dataplane::load(&opts) {
        Ok(_) => (NAME, true, "Dataplane::load with private maps".into()),
        Err(e) => (NAME, false, format!("{e}")),
    }
}

/// Whether shield's own program loads, then native XDP on veth, XDP link
/// update and LPM batches with it, on a lab of its own.
fn with_the_program() -> Vec<Row> {
    let lab = Lab::new();
    let pins = PathBuf::from(format!(
        "/sys/fs/bpf/shield-features-{}",
        std::process::id()
    ));
    let _ = pins::remove_all(&pins);
    if let Err(e) = pins::ensure_pin_dir(&pins) {
        return vec![(
            "shield's program loads",
            false,
            format!("{}: {e}", pins.display()),
        )];
    }
    let result = std::thread::scope(|s| {
        s.spawn(|| {
            Lab::enter(&lab.server_ns);
            let opts = LoadOptions {
                pin_dir: Some(pins.clone()),
                ..LoadOptions::default()
            };
            let mut first = match Dataplane::load(&opts) {
                Ok(dp) => dp,
                Err(e) => {
                    return vec![("shield's program loads", false, format!("{e}"))];
                }
            };
            let loads = (
                "shield's program loads",
                true,
                "Dataplane::load, as the agent starts".to_string(),
            );
            let batches = first.lpm_batches_supported();
            let native = first.attach_pinned(&lab.server_if, &[AttachMode::Native], &pins);
            // A second load onto the pinned link: the agent's restart and
            // upgrade path, one BPF_LINK_UPDATE.
            let update = native.as_ref().ok().map(|_| {
                Dataplane::load(&opts).and_then(|mut second| {
                    second.attach_pinned(&lab.server_if, &[AttachMode::Native], &pins)
                })
            });
            vec![
                loads,
                (
                    "native XDP on veth",
                    native.is_ok(),
                    native
                        .as_ref()
                        .map_or_else(|e| format!("{e}"), |_| "attached in driver mode".into()),
                ),
                match update {
                    Some(Ok(a)) => (
                        "XDP link update",
                        a.replaced,
                        format!(
                            "second program on the pinned link: replaced = {}",
                            a.replaced
                        ),
                    ),
                    Some(Err(e)) => ("XDP link update", false, format!("{e}")),
                    None => ("XDP link update", false, "not tried: no native link".into()),
                },
                match batches {
                    Ok(b) => (
                        "batch updates on LPM tries",
                        b,
                        "an empty BPF_MAP_UPDATE_BATCH on FEED_NET_V4".into(),
                    ),
                    Err(e) => ("batch updates on LPM tries", false, format!("{e}")),
                },
            ]
        })
        .join()
        .unwrap_or_else(|_| vec![("shield's program loads", false, "the probe panicked".into())])
    });
    let _ = pins::remove_all(&pins);
    result
}
