//! Reading config files.

use super::*;

#[test]
fn load_reads_a_file_and_names_it_in_errors() {
    let dir = std::env::temp_dir().join(format!("shield-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.toml");
    std::fs::write(&good, "interfaces = [\"eth0\"]\n").unwrap();
    assert_eq!(load(&good, TICK).unwrap().interfaces, ["eth0"]);

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "\nipv6_prefix = 1\n").unwrap();
    let e = load(&bad, TICK).unwrap_err();
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:15: ", bad.display())),
        "{e}"
    );

    let missing = dir.join("missing.toml");
    let e = load(&missing, TICK).unwrap_err();
    assert_eq!(e.errors.len(), 1);
    assert_eq!(e.errors[0].line, 0);
    let shown = e.to_string();
    assert!(
        shown.starts_with(&format!(
            "{}: cannot read the config file: ",
            missing.display()
        )) && shown.contains("No such file")
            && shown.contains("embedded default policy"),
        "{shown}"
    );

    let e = load(&dir, TICK).unwrap_err().to_string();
    assert!(e.contains("not its directory"), "{e}");

    let binary = dir.join("binary.toml");
    std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
    let e = load(&binary, TICK).unwrap_err().to_string();
    assert!(e.contains("UTF-8"), "{e}");

    std::fs::remove_dir_all(&dir).unwrap();
}
