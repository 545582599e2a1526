//! The real binary end to end: configuration errors exit 64 naming the field, `pool scale` and
//! `pool status` against `poolpilot sim`, authentication failures, signals and sd-notify.

mod common;

use std::io::Read;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

fn poolpilot(args: &[&str]) -> Command {
    let mut c = common::base_command();
    c.args(args).env("POOLPILOT_LOG_FORMAT", "text");
    c
}

fn run(c: &mut Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run poolpilot")
}

use common::all_output as text;
use common::{md5_hex, serve_bytes};

/// A `poolpilot sim` child on an ephemeral port, with the client environment it wrote.
struct SimProcess {
    child: Child,
    env: Vec<(String, String)>,
    _dir: tempfile::TempDir,
}

impl SimProcess {
    fn start(extra: &[&str], notify: Option<&Path>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let env_file = dir.path().join("sim.env");
        let mut args = vec![
            "sim",
            "--listen",
            "127.0.0.1:0",
            "--operation-delay",
            "200ms",
            "--boot-delay",
            "300ms",
            "--env-file",
            env_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let mut cmd = poolpilot(&args);
        if let Some(sock) = notify {
            cmd.env("NOTIFY_SOCKET", sock)
                .env("WATCHDOG_USEC", "400000");
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // Written atomically: once it exists, it is whole.
        while !env_file.exists() {
            assert!(Instant::now() < deadline, "the simulator did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let env = std::fs::read_to_string(&env_file)
            .unwrap()
            .lines()
            .filter_map(|l| l.strip_prefix("export "))
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self {
            child,
            env,
            _dir: dir,
        }
    }

    fn var(&self, k: &str) -> String {
        self.env.iter().find(|(n, _)| n == k).unwrap().1.clone()
    }

    fn client(&self, args: &[&str]) -> Command {
        let mut c = poolpilot(args);
        c.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    }

    fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Waits for exit, at most `limit`; returns the exit code.
    fn wait_exit(&mut self, limit: Duration) -> i32 {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code().expect("exited, not killed");
            }
            assert!(Instant::now() < deadline, "did not exit within {limit:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_and_version_list_the_subcommands() {
    let o = run(&mut poolpilot(&["--help"]));
    assert!(o.status.success());
    let t = text(&o);
    for sub in ["sim", "pool"] {
        assert!(t.contains(sub), "{t}");
    }
    let o = run(&mut poolpilot(&["--version"]));
    assert!(o.status.success());
    assert!(text(&o).contains(env!("CARGO_PKG_VERSION")));
}

#[test]
fn invalid_configuration_exits_64_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| -> PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p
    };
    let bad_zone = write("zone.toml", "zone = \"mars-1\"\n");
    let typo = write("typo.toml", "zoen = \"ch-gva-2\"\n");
    let bad_delay = write("delay.toml", "[sim]\nboot-delay = \"soon\"\n");
    let pool = "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6";
    type Case<'a> = (Vec<String>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        // (arguments, environment, what the message must name)
        (
            vec!["pool".into(), "status".into()],
            vec![("EXOSCALE_KEY", "k"), ("EXOSCALE_SECRET", "s")],
            "`pool`",
        ),
        (
            vec![
                "pool".into(),
                "status".into(),
                "--pool".into(),
                "nope".into(),
            ],
            vec![],
            "`pool`",
        ),
        (
            vec![
                "pool".into(),
                "status".into(),
                "--pool".into(),
                pool.into(),
                "--zone".into(),
                "mars-1".into(),
            ],
            vec![],
            "--zone",
        ),
        (
            vec![
                "pool".into(),
                "scale".into(),
                "--pool".into(),
                pool.into(),
                "--size".into(),
                "-1".into(),
            ],
            vec![],
            "--size",
        ),
        (
            vec![
                "pool".into(),
                "scale".into(),
                "--pool".into(),
                pool.into(),
                "--size".into(),
                "2".into(),
            ],
            vec![],
            "EXOSCALE_API_KEY",
        ),
        (
            vec![
                "pool".into(),
                "status".into(),
                "--pool".into(),
                pool.into(),
                "--api-timeout".into(),
                "30".into(),
            ],
            vec![],
            "--api-timeout",
        ),
        (
            vec!["pool".into(), "status".into()],
            vec![("EXOSCALE_ZONE", "mars-1")],
            "--zone",
        ),
        (
            vec![
                "--config".into(),
                bad_zone.display().to_string(),
                "pool".into(),
                "status".into(),
            ],
            vec![],
            "zone",
        ),
        (
            vec![
                "--config".into(),
                typo.display().to_string(),
                "pool".into(),
                "status".into(),
            ],
            vec![],
            "zoen",
        ),
        (
            vec![
                "--config".into(),
                bad_delay.display().to_string(),
                "sim".into(),
            ],
            vec![],
            "boot-delay",
        ),
        (
            vec!["sim".into(), "--boot-delay".into(), "10".into()],
            vec![],
            "--boot-delay",
        ),
        (
            vec![
                "sim".into(),
                "--pool-size".into(),
                "999".into(),
                "--listen".into(),
                "127.0.0.1:0".into(),
            ],
            vec![],
            "pool-size",
        ),
        (
            vec!["sim".into(), "--zone".into(), "nowhere".into()],
            vec![],
            "--zone",
        ),
        (
            vec!["pool".into(), "status".into(), "--pool".into(), pool.into()],
            vec![
                ("EXOSCALE_KEY", "k"),
                ("EXOSCALE_SECRET", "s"),
                ("EXOSCALE_API_ENDPOINT", "::not a url"),
            ],
            "EXOSCALE_API_ENDPOINT",
        ),
        (vec!["frobnicate".into()], vec![], "frobnicate"),
    ];
    common::each_exits_64_naming_the_field(
        cases
            .into_iter()
            .map(|(args, env, field)| ((args, env), field)),
        |(args, env)| {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            run(poolpilot(&args).envs(env.iter().copied()))
        },
        common::all_output,
    );
}

#[test]
fn scale_with_wait_then_status_shows_every_member_running() {
    let sim = SimProcess::start(&[], None);
    let o = run(&mut sim.client(&["pool", "scale", "--size", "3", "--wait"]));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("3 members running"), "{}", text(&o));

    let o = run(&mut sim.client(&["pool", "status", "--json"]));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pool"]["size"], 3);
    let members = v["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["state"] == "running"), "{v}");
    let health = &v["load-balancers"][0]["services"][0]["healthcheck-status"];
    assert_eq!(health.as_array().unwrap().len(), 3);

    let o = run(&mut sim.client(&["pool", "status"]));
    let table = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        table.contains("size 3") && table.matches("running").count() >= 4,
        "{table}"
    );
    assert!(table.contains("3/3 healthy"), "{table}");
}

#[test]
fn a_wrong_secret_fails_clearly_and_changes_nothing() {
    let sim = SimProcess::start(&[], None);
    let o = run(sim
        .client(&["pool", "scale", "--size", "4"])
        .env("EXOSCALE_API_SECRET", "definitely-wrong")
        .env("POOLPILOT_LOG", "trace"));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("refused the credentials"), "{t}");
    assert!(!t.contains("definitely-wrong"), "the secret leaked:\n{t}");
    assert!(
        !t.contains("EXO2-HMAC-SHA256 credential"),
        "the Authorization header leaked:\n{t}"
    );

    let o = run(&mut sim.client(&["pool", "status", "--json"]));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pool"]["size"], 1);
}

#[test]
fn the_course_variable_names_alone_are_enough() {
    let sim = SimProcess::start(&[], None);
    let mut c = poolpilot(&["pool", "status", "--json"]);
    c.env("EXOSCALE_API_ENDPOINT", sim.var("EXOSCALE_API_ENDPOINT"))
        .env("EXOSCALE_KEY", sim.var("EXOSCALE_API_KEY"))
        .env("EXOSCALE_SECRET", sim.var("EXOSCALE_API_SECRET"))
        .env("EXOSCALE_ZONE", "ch-gva-2")
        .env(
            "EXOSCALE_INSTANCEPOOL_ID",
            sim.var("EXOSCALE_INSTANCEPOOL_ID"),
        );
    let o = run(&mut c);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn sigterm_and_sigint_stop_the_simulator_with_exit_0() {
    for sig in ["TERM", "INT"] {
        let mut sim = SimProcess::start(&[], None);
        let started = Instant::now();
        sim.signal(sig);
        assert_eq!(sim.wait_exit(Duration::from_secs(5)), 0, "SIG{sig}");
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}

#[test]
fn the_simulator_tells_systemd_it_is_ready_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut sim = SimProcess::start(&[], Some(&sock_path));
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"READY=1\n");
    // WATCHDOG_USEC=400000: pings every 200 ms.
    for _ in 0..2 {
        let n = sock.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1\n");
    }
    sim.signal("TERM");
    // Watchdog pings may come first, however many: read until STOPPING or the timeout.
    let deadline = Instant::now() + Duration::from_secs(20);
    let stopping = loop {
        match sock.recv(&mut buf) {
            Ok(n) if &buf[..n] == b"STOPPING=1\n" => break true,
            Ok(_) if Instant::now() < deadline => continue,
            _ => break false,
        }
    };
    assert!(stopping, "no STOPPING=1");
    assert_eq!(sim.wait_exit(Duration::from_secs(5)), 0);
    let mut out = String::new();
    sim.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("export EXOSCALE_API_ENDPOINT=http://127.0.0.1:"),
        "{out}"
    );
}

#[test]
fn json_logs_are_one_object_per_line() {
    let mut sim = SimProcess::start(&["--log-format", "json"], None);
    sim.signal("TERM");
    assert_eq!(sim.wait_exit(Duration::from_secs(5)), 0);
    let mut err = String::new();
    sim.child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let lines: Vec<&str> = err.lines().collect();
    assert!(!lines.is_empty());
    for l in lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(
            v.get("level").is_some() && v.get("message").is_some(),
            "{l}"
        );
    }
}

#[test]
fn the_simulator_is_seeded_from_the_configuration_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("sim.toml");
    std::fs::write(
        &cfg,
        "[sim]\nboot-delay = \"1s\"\n\n[[sim.pool]]\nname = \"web\"\nsize = 2\ninstance-type = \"standard.small\"\nload-balancer = false\n",
    )
    .unwrap();
    let sim = SimProcess::start(&["--config", cfg.to_str().unwrap()], None);
    let o = run(&mut sim.client(&["pool", "status", "--json"]));
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pool"]["name"], "web");
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert!(v["load-balancers"].as_array().unwrap().is_empty());
}

#[test]
fn template_register_waits_for_the_template_and_refuses_bad_input() {
    let sim = SimProcess::start(&[], None);
    let image = b"a stand-in for the pool node's image".to_vec();
    let checksum = md5_hex(&image);
    let url = serve_bytes(image);
    let o = run(&mut sim.client(&[
        "template",
        "register",
        "--name",
        "poolpilot-pool-node",
        "--url",
        &url,
        "--checksum",
        &checksum,
    ]));
    let t = text(&o);
    assert!(o.status.success(), "{t}");
    assert!(t.contains("registered as `poolpilot-pool-node`"), "{t}");
    let o = run(&mut sim.client(&[
        "template",
        "register",
        "--name",
        "x",
        "--url",
        "https://example.invalid/x.qcow2",
        "--checksum",
        "not-an-md5",
    ]));
    assert_eq!(o.status.code(), Some(64));
    assert!(text(&o).contains("--checksum"));
}

/// POSTs JSON to the simulator's unsigned admin API (on the API's own address).
fn admin_post(sim: &SimProcess, path: &str, body: &str) -> String {
    use std::io::Write;
    let endpoint = url::Url::parse(&sim.var("EXOSCALE_API_ENDPOINT")).unwrap();
    let addr = format!(
        "{}:{}",
        endpoint.host_str().unwrap(),
        endpoint.port().unwrap()
    );
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST /admin{path} HTTP/1.1\r\nHost: sim\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

#[test]
fn status_shows_the_pool_and_names_each_part_it_could_not_read() {
    let sim = SimProcess::start(&[], None);
    // A key without the rights to list load balancers: 403 is not retried.
    admin_post(
        &sim,
        "/faults",
        r#"{"status": 403, "path": "/v2/load-balancer"}"#,
    );
    let o = run(&mut sim.client(&["pool", "status"]));
    let t = text(&o);
    assert_eq!(o.status.code(), Some(0), "{t}");
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("size 1"), "the pool is shown: {out}");
    assert!(out.contains("running"), "its member is shown: {out}");
    assert!(
        out.contains("could not read the load balancers:") && out.contains("403"),
        "{out}"
    );

    admin_post(
        &sim,
        "/faults",
        r#"{"status": 403, "path": "/v2/instance"}"#,
    );
    let o = run(&mut sim.client(&["pool", "status", "--json"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["pool"]["size"], 1, "{v}");
    assert_eq!(v["unread"][0]["part"], "pool's members", "{v}");
    assert_eq!(v["unread"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["load-balancers"].as_array().unwrap().len(), 1, "{v}");

    // The pool itself unreadable is still a failure.
    let pool = sim.var("EXOSCALE_INSTANCEPOOL_ID");
    admin_post(
        &sim,
        "/faults",
        &format!(r#"{{"status": 403, "path": "/v2/instance-pool/{pool}"}}"#),
    );
    let o = run(&mut sim.client(&["pool", "status"]));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}
