//! A real CrowdSec Local API (1.4.6, Debian's `crowdsec` package) for the
//! tests and the fleet benchmark.
//!
//! The package's postinst registers with CrowdSec's central API, which
//! fails offline, so the package is never installed: `apt-get download`
//! fetches it once into `<target>/crowdsec/` and `dpkg-deb -x` unpacks it.
//! Each [`Lapi`] then runs `crowdsec -no-cs` (the API alone, no log
//! processing) on a generated config: no `online_client`, a sqlite database
//! in a temp dir, a free port. `cscli` registers the bouncer and the
//! machines. The process is killed on drop.

use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    agent::{Agent, AgentHome, run_in_netns},
    lab::Lab,
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The bouncer key every test LAPI knows (`cscli bouncers add -k`).
pub const BOUNCER_KEY: &str = "shieldtestbouncerkey0123456789";

/// Where the unpacked package lives: `<target>/crowdsec/root`.
fn cache_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    // target/<profile>/deps/<test> or target/<profile>/<bin>
    let mut dir = exe.parent().expect("exe dir").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.pop();
    dir.join("crowdsec")
}

/// The unpacked package's root, fetching and unpacking it the first time.
pub fn package_root() -> PathBuf {
    let cache = cache_dir();
    let root = cache.join("root");
    if root.join("usr/bin/crowdsec").exists() {
        return root;
    }
    fs::create_dir_all(&cache).unwrap();
    // Unpack under a private name, then rename: two processes racing here
    // both end with a complete tree.
    let tmp = cache.join(format!("dl-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).unwrap();
    let out = Command::new("apt-get")
        .args(["download", "-q", "crowdsec"])
        .current_dir(&tmp)
        .output()
        .expect("run apt-get download");
    assert!(
        out.status.success(),
        "apt-get download crowdsec failed (run `cargo xtask setup`, which updates the package lists): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deb = fs::read_dir(&tmp)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("the downloaded .deb");
    let unpacked = tmp.join("root");
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&unpacked)
        .status()
        .unwrap();
    assert!(st.success(), "dpkg-deb -x {}", deb.display());
    if fs::rename(&unpacked, &root).is_err() {
        assert!(root.join("usr/bin/crowdsec").exists());
    }
    let _ = fs::remove_dir_all(&tmp);
    root
}

fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running LAPI.
pub struct Lapi {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    scheme: &'static str,
    /// The network namespace it runs in (`None`: the host's).
    ns: Option<String>,
    bin: PathBuf,
    child: Option<Child>,
}

impl Lapi {
    /// Starts a LAPI listening on `listen` (an address inside `ns`, or the
    /// host's when `ns` is `None`) and registers [`BOUNCER_KEY`] and a
    /// machine for `cscli` itself.
    pub fn start(ns: Option<&str>, listen: Ipv4Addr) -> Lapi {
        Lapi::start_with(ns, listen, None)
    }

    /// An https LAPI that also accepts bouncers by client certificate:
    /// certificates signed by `pki.ca` with OU `bouncer-ou`.
    pub fn start_mtls(ns: Option<&str>, listen: Ipv4Addr, pki: &Pki) -> Lapi {
        Lapi::start_inner(
            ns,
            listen,
            Some((&pki.server_cert, &pki.server_key)),
            Some(&pki.ca),
        )
    }

    /// As [`Lapi::start`], serving https with this certificate and key
    /// (PEM files); `cscli` then skips verification (it is test plumbing).
    pub fn start_with(ns: Option<&str>, listen: Ipv4Addr, tls: Option<(&Path, &Path)>) -> Lapi {
        Lapi::start_inner(ns, listen, tls, None)
    }

    fn start_inner(
        ns: Option<&str>,
        listen: Ipv4Addr,
        tls: Option<(&Path, &Path)>,
        client_ca: Option<&Path>,
    ) -> Lapi {
        let root = package_root();
        let tag = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("shield-lapi-{tag}"));
        let _ = fs::remove_dir_all(&dir);
        for d in ["data", "hub", "notifications"] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        // A free port on the host's loopback is as good a guess as any
        // inside a fresh namespace, where nothing listens yet.
        let port = free_port();
        let d = dir.display();
        fs::write(dir.join("hub/.index.json"), "{}").unwrap();
        fs::write(dir.join("simulation.yaml"), "simulation: off\n").unwrap();
        fs::write(
            dir.join("profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\ndecisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )
        .unwrap();
        let config = dir.join("config.yaml");
        let (scheme, tls_yaml) = match tls {
            Some((cert, key)) => (
                "https",
                format!(
                    "    tls:\n      cert_file: {}\n      key_file: {}\n{}",
                    cert.display(),
                    key.display(),
                    client_ca.map_or(String::new(), |ca| format!(
                        "      ca_cert_path: {}\n      bouncers_allowed_ou:\n        - bouncer-ou\n      client_verification: VerifyClientCertIfGiven\n",
                        ca.display()
                    ))
                ),
            ),
            None => ("http", String::new()),
        };
        fs::write(
            &config,
            format!(
                "common:
  daemonize: false
  log_media: stdout
  log_level: info
  working_dir: .
config_paths:
  config_dir: {d}/
  data_dir: {d}/data/
  simulation_path: {d}/simulation.yaml
  hub_dir: {d}/hub/
  index_path: {d}/hub/.index.json
  notification_dir: {d}/notifications/
  plugin_dir: {plugins}/
crowdsec_service:
  acquisition_path: {d}/acquis.yaml
db_config:
  log_level: info
  type: sqlite
  db_path: {d}/data/crowdsec.db
  use_wal: true
  flush:
    max_items: 1000000
    max_age: 7d
api:
  client:
    insecure_skip_verify: {skip}
    credentials_path: {d}/local_api_credentials.yaml
  server:
    log_level: info
    listen_uri: {listen}:{port}
    profiles_path: {d}/profiles.yaml
    trusted_ips:
      - 127.0.0.1
{tls_yaml}prometheus:
  enabled: false
",
                plugins = root.join("usr/lib/crowdsec/plugins").display(),
                skip = tls.is_some(),
            ),
        )
        .unwrap();
        let mut lapi = Lapi {
            dir,
            config,
            port,
            scheme,
            ns: ns.map(str::to_string),
            bin: root.join("usr/bin"),
            child: None,
        };
        lapi.run();
        lapi.cscli_ok(&["bouncers", "add", "shield-test", "-k", BOUNCER_KEY]);
        let creds = lapi.dir.join("local_api_credentials.yaml");
        lapi.cscli_ok(&[
            "machines",
            "add",
            "cscli-test",
            "--password",
            "cscli-test-password-0123",
            "-f",
            creds.to_str().unwrap(),
            "--force",
        ]);
        // cscli reaches the LAPI at the URL the credentials file names.
        let text = fs::read_to_string(&creds).unwrap();
        let url = format!("{scheme}://127.0.0.1:{port}");
        let text = text
            .lines()
            .map(|l| {
                if l.starts_with("url:") {
                    format!("url: {url}")
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        fs::write(&creds, text).unwrap();
        lapi
    }

    /// Starts (or restarts) the process and waits until it answers.
    pub fn run(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("crowdsec.log"))
            .unwrap();
        let mut cmd = Command::new(self.bin.join("crowdsec"));
        cmd.args(["-no-cs", "-no-capi", "-c"])
            .arg(&self.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(ns) = &self.ns {
            run_in_netns(&mut cmd, ns);
        }
        self.child = Some(cmd.spawn().expect("spawn crowdsec"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.answers() {
            if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("crowdsec exited ({st}) at start:\n{}", self.logs());
            }
            assert!(
                Instant::now() < deadline,
                "crowdsec did not listen on port {} within 30 s:\n{}",
                self.port,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process; the database stays for [`Lapi::run`].
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SIGTERM: the LAPI closes its database cleanly.
            // SAFETY: plain kill(2) on our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            while c.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Whether something accepts connections on the port.
    fn answers(&self) -> bool {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let try_connect =
            move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok();
        match &self.ns {
            None => try_connect(),
            Some(ns) => {
                let ns = ns.clone();
                std::thread::spawn(move || {
                    crate::lab::Lab::enter(&ns);
                    try_connect()
                })
                .join()
                .unwrap()
            }
        }
    }

    /// The URL from inside its namespace.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme, self.port)
    }

    /// Runs `cscli -c CONFIG ARGS` where the LAPI runs.
    pub fn cscli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(self.bin.join("cscli"));
        cmd.arg("-c").arg(&self.config).args(args);
        if let Some(ns) = &self.ns {
            run_in_netns(&mut cmd, ns);
        }
        cmd.output().expect("run cscli")
    }

    /// As [`Lapi::cscli`], asserting success; returns stdout and stderr.
    pub fn cscli_ok(&self, args: &[&str]) -> String {
        let out = self.cscli(args);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "cscli {args:?} failed:\n{text}");
        text
    }

    /// Imports one `ban` decision lasting `duration` (`4h`) per address
    /// with `cscli decisions import`: one CSV file and one call, the quick
    /// way to fill a LAPI with many. Returns how long the import took.
    pub fn import_bans(&self, addrs: impl IntoIterator<Item = IpAddr>, duration: &str) -> Duration {
        let mut csv = String::from("duration,scope,value\n");
        for a in addrs {
            let _ = writeln!(csv, "{duration},ip,{a}");
        }
        let file = self.dir.join("decisions.csv");
        fs::write(&file, csv).unwrap();
        let t = Instant::now();
        self.cscli_ok(&["decisions", "import", "-i", file.to_str().unwrap()]);
        t.elapsed()
    }

    /// Registers another bouncer with this key. Every shield instance needs
    /// its own: the LAPI keys the decision stream's deltas by bouncer, so
    /// two instances sharing a key would each miss what the other pulled.
    pub fn add_bouncer(&self, name: &str, key: &str) {
        self.cscli_ok(&["bouncers", "add", name, "-k", key]);
    }

    /// Registers a machine (watcher) with this password, validated.
    pub fn add_machine(&self, id: &str, password: &str) {
        let sink = self.dir.join(format!("{id}-credentials.yaml"));
        self.cscli_ok(&[
            "machines",
            "add",
            id,
            "--password",
            password,
            "-f",
            sink.to_str().unwrap(),
            "--force",
        ]);
    }

    /// Everything crowdsec logged so far.
    pub fn logs(&self) -> String {
        fs::read_to_string(self.dir.join("crowdsec.log")).unwrap_or_default()
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Lapi {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Writes a secret file (mode 0600) and returns its path.
pub fn secret_file(dir: &Path, name: &str, value: &str) -> PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let p = dir.join(name);
    let _ = fs::remove_file(&p);
    let mut f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(&p)
        .unwrap();
    std::io::Write::write_all(&mut f, value.as_bytes()).unwrap();
    p
}

/// A throwaway PKI made with openssl: a CA, a server certificate for
/// 127.0.0.1, and a client certificate with the OU the LAPI admits
/// bouncers by (`bouncer-ou`) or another one.
pub struct Pki {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new(dir: &Path, client_ou: &str) -> Pki {
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let mut ca = vec!["req", "-x509"];
        ca.extend(ec);
        ca.extend([
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=shield test CA",
        ]);
        openssl(dir, &ca);
        for (name, subj, ext) in [
            (
                "server",
                "/CN=127.0.0.1".to_string(),
                "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                format!("/OU={client_ou}/CN=shield-test"),
                "extendedKeyUsage=clientAuth\n",
            ),
        ] {
            let mut req = vec!["req"];
            req.extend(ec);
            let (key, csr, pem, extf) = (
                format!("{name}.key"),
                format!("{name}.csr"),
                format!("{name}.pem"),
                format!("{name}.ext"),
            );
            req.extend(["-keyout", &key, "-out", &csr, "-subj", &subj]);
            openssl(dir, &req);
            fs::write(dir.join(&extf), ext).unwrap();
            openssl(
                dir,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &csr,
                    "-CA",
                    "ca.pem",
                    "-CAkey",
                    "ca.key",
                    "-CAcreateserial",
                    "-out",
                    &pem,
                    "-days",
                    "2",
                    "-extfile",
                    &extf,
                ],
            );
        }
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir.join("client.key"), fs::Permissions::from_mode(0o600)).unwrap();
        Pki {
            ca: dir.join("ca.pem"),
            server_cert: dir.join("server.pem"),
            server_key: dir.join("server.key"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client.key"),
        }
    }
}

/// The `[crowdsec]` section of an agent config: `url` polled every `poll`,
/// `key` in a private file in the agent's home, then the `extra` lines.
pub fn crowdsec_section(home: &AgentHome, url: &str, key: &str, poll: &str, extra: &str) -> String {
    let key_file = secret_file(&home.dir, "crowdsec.key", key);
    format!(
        "[crowdsec]\nlapi_url = \"{url}\"\napi_key_file = \"{}\"\npoll = \"{poll}\"\n{extra}",
        key_file.display()
    )
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

/// Two labs and a LAPI in A's server namespace. B's server reaches it over
/// a veth of their own, A at 10.210.0.1 and B at 10.210.0.2 (the XDP
/// programs are on the labs' sh-srv only).
pub fn linked_labs() -> (Lab, Lab, Lapi) {
    let (a, b) = (Lab::new(), Lab::new());
    let lapi = Lapi::start(Some(&a.server_ns), Ipv4Addr::UNSPECIFIED);
    ip(&[
        "link",
        "add",
        "sh-fa",
        "netns",
        &a.server_ns,
        "type",
        "veth",
        "peer",
        "name",
        "sh-fb",
        "netns",
        &b.server_ns,
    ]);
    for (ns, dev, addr) in [
        (&a.server_ns, "sh-fa", "10.210.0.1/30"),
        (&b.server_ns, "sh-fb", "10.210.0.2/30"),
    ] {
        ip(&["-n", ns, "addr", "add", addr, "dev", dev]);
        ip(&["-n", ns, "link", "set", dev, "up"]);
    }
    (a, b, lapi)
}

/// Agents on the [`linked_labs`], both polling every `poll`. A pushes its
/// autobans as machine `{tag}-a`, flooding past 100 packets/s bans after
/// the `[autoban]` lines in `autoban`. B is a bouncer of its own, `{tag}-b`:
/// the LAPI tracks each bouncer's stream.
pub fn start_pair(
    lapi: &Lapi,
    (a, b): (&Lab, &Lab),
    tag: &str,
    poll: &str,
    autoban: &str,
) -> (AgentHome, AgentHome, Agent, Agent) {
    let password = format!("{tag}-a-password-0123");
    lapi.add_machine(&format!("{tag}-a"), &password);
    let home_a = AgentHome::new();
    let pw = secret_file(&home_a.dir, "crowdsec.pw", &password);
    let cs_a = crowdsec_section(
        &home_a,
        &lapi.url(),
        BOUNCER_KEY,
        poll,
        &format!(
            "machine_id = \"{tag}-a\"\npassword_file = \"{}\"\n",
            pw.display()
        ),
    );
    home_a.write_config(&format!(
        "{}[limits]\npackets = \"100/s\"\npacket_burst = 100\n[autoban]\n{autoban}{cs_a}",
        home_a.base_config(a)
    ));
    let key_b = format!("{tag}-b-bouncer-key-0123456789");
    lapi.add_bouncer(&format!("{tag}-b"), &key_b);
    let home_b = AgentHome::new();
    let cs_b = crowdsec_section(
        &home_b,
        &format!("http://10.210.0.1:{}", lapi.port),
        &key_b,
        poll,
        "",
    );
    home_b.write_config(&format!("{}{cs_b}", home_b.base_config(b)));
    let agent_a = home_a.start(a, &[]);
    let agent_b = home_b.start(b, &[]);
    (home_a, home_b, agent_a, agent_b)
}
