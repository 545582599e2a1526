//! `poolpilot template push` and `delete` end to end, over real sockets: the real binary, a real
//! S3 server (moto's, from PyPI, started here on a loopback port) and the simulator, which
//! downloads the image through the pre-signed URL and checks its MD5 as Exoscale does.
//!
//! moto must be installed (`pip install 'moto[server]'`; `.ci/run` does it): without it these
//! tests fail, saying so.

mod common;

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use poolpilot::exoscale::Client;
use serde_json::Value;

/// moto does not check signatures: an Authorization header naming the test's key makes a raw
/// request one of the uploader's account, as a client with that key would send it.
const MOTO_AUTH: &str = "AWS4-HMAC-SHA256 Credential=EXOtest0000000000000000000/20261130/ch-gva-2/s3/aws4_request, SignedHeaders=host, Signature=00";

/// moto's S3 server on a loopback port, killed when dropped.
struct Moto {
    child: Child,
    port: u16,
}

impl Moto {
    fn start() -> Self {
        let found = Command::new("python3")
            .args(["-c", "import moto.server"])
            .output();
        assert!(
            found.as_ref().is_ok_and(|o| o.status.success()),
            "these tests need moto's S3 server: install it with `python3 -m pip install \
             'moto[server]>=5,<6'` (.ci/run does; on a Debian system Python add \
             --break-system-packages or use a venv). {}",
            found
                .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
                .unwrap_or_else(|e| format!("python3: {e}"))
        );
        let port = free_port();
        let child = Command::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start python3 -m moto.server");
        let mut moto = Self { child, port };
        // Bounded: a server that never answers fails the test instead of hanging it.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = moto.child.try_wait().unwrap() {
                panic!("moto's server exited at start ({status})");
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(Instant::now() < deadline, "moto's server did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The object's bytes, read straight from moto, or `None` when it has no such object.
    async fn object(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let r = reqwest::Client::new()
            .get(format!("{}/{bucket}/{key}", self.endpoint()))
            .header("authorization", MOTO_AUTH)
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => Some(r.bytes().await.unwrap().to_vec()),
            404 => None,
            s => panic!("GET {bucket}/{key}: HTTP {s}"),
        }
    }

    /// Replaces the object's content behind the uploader's back.
    async fn overwrite(&self, bucket: &str, key: &str, body: Vec<u8>) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}/{key}", self.endpoint()))
            .header("authorization", MOTO_AUTH)
            .header("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }

    /// Creates a bucket that belongs to another account (moto's account header).
    async fn foreign_bucket(&self, bucket: &str) {
        let r = reqwest::Client::new()
            .put(format!("{}/{bucket}", self.endpoint()))
            .header("x-moto-account-id", "111111111111")
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One test's world: moto, the simulator, a directory for images.
struct World {
    moto: Moto,
    sim: TestSim,
    dir: tempfile::TempDir,
}

impl World {
    async fn start() -> Self {
        Self {
            moto: Moto::start(),
            sim: start(1, quick()).await,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn client(&self) -> Client {
        self.sim.client()
    }

    fn image(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    /// `poolpilot template ARGS` with the simulator's endpoint and key, and moto as SOS.
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = base_command();
        c.env("EXOSCALE_API_ENDPOINT", self.sim.running.endpoint())
            .env("EXOSCALE_API_KEY", KEY)
            .env("EXOSCALE_API_SECRET", SECRET)
            .arg("template")
            .args(args)
            .args([
                "--zone",
                "ch-gva-2",
                "--sos-endpoint",
                &self.moto.endpoint(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        tokio::process::Command::from(c)
    }

    async fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().await.unwrap()
    }

    async fn push(&self, bucket: &str, name: &str, file: &Path, extra: &[&str]) -> Output {
        let file = file.to_str().unwrap();
        let mut args = vec![
            "push", "--bucket", bucket, "--name", name, "--file", file, "--json",
        ];
        args.extend_from_slice(extra);
        self.run(&args).await
    }

    async fn private_templates(&self) -> Vec<poolpilot::exoscale::Template> {
        self.client().list_templates("private").await.unwrap()
    }
}

fn json_out(o: &Output) -> Value {
    assert!(o.status.success(), "{}", all_output(o));
    serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", all_output(o)))
}

/// Bytes that differ everywhere (a fixed pseudo-random sequence), `len` of them.
fn image_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_uploads_registers_reuses_and_delete_removes_template_and_object() {
    let w = World::start().await;
    // Past two parts: the upload is multipart, its last part short.
    let bytes = image_bytes(2 * poolpilot::template::sos::PART_SIZE + 123, 7);
    let md5 = md5_hex(&bytes);
    let file = w.image("pool.qcow2", &bytes);

    let o = w.push("images", "poolpilot-pool", &file, &[]).await;
    let first = json_out(&o);
    let logs = stderr(&o);
    assert_eq!(first["name"], "poolpilot-pool");
    assert_eq!(first["zone"], "ch-gva-2");
    assert_eq!(first["checksum"], md5.as_str());
    assert_eq!(first["size"], bytes.len() as u64);
    assert_eq!(first["bucket"], "images");
    assert_eq!(first["key"], "poolpilot-pool.qcow2");
    assert_eq!(
        (first["uploaded"].as_bool(), first["registered"].as_bool()),
        (Some(true), Some(true))
    );
    // Neither the secret nor the pre-signed URL's signature reaches the logs.
    assert!(!logs.contains(SECRET), "{logs}");
    assert!(!logs.contains("X-Amz-Signature"), "{logs}");
    assert!(logs.contains("signature redacted"), "{logs}");

    // The object is the file, and the simulator registered what it downloaded through the
    // pre-signed URL: same MD5, same size.
    let stored = w.moto.object("images", "poolpilot-pool.qcow2").await;
    assert!(
        stored.as_deref() == Some(bytes.as_slice()),
        "the object differs from the file"
    );
    let id: uuid::Uuid = first["id"].as_str().unwrap().parse().unwrap();
    let t = w.client().get_template(id).await.unwrap();
    assert_eq!(t.checksum.as_deref(), Some(md5.as_str()));
    assert_eq!(t.size, Some(bytes.len() as u64));
    assert_eq!(t.visibility.as_deref(), Some("private"));
    assert_eq!(t.boot_mode.as_deref(), Some("legacy"));
    assert_eq!(t.default_user.as_deref(), Some("root"));
    assert_eq!(
        (t.ssh_key_enabled, t.password_enabled),
        (Some(true), Some(false))
    );
    let presigned = t.url.unwrap();
    assert!(
        presigned.starts_with(&format!(
            "{}/images/poolpilot-pool.qcow2?",
            w.moto.endpoint()
        )),
        "{presigned}"
    );
    assert!(presigned.contains("X-Amz-Expires=3600"), "{presigned}");

    // Again with the same image: the template is reused, nothing uploaded or registered.
    let posts = w.sim.requests_to("POST", "/v2/template");
    let second = json_out(&w.push("images", "poolpilot-pool", &file, &[]).await);
    assert_eq!(second["id"], first["id"]);
    assert_eq!(
        (second["uploaded"].as_bool(), second["registered"].as_bool()),
        (Some(false), Some(false))
    );
    assert_eq!(w.sim.requests_to("POST", "/v2/template"), posts);
    assert_eq!(w.private_templates().await.len(), 1);

    // Delete: the template and the object are gone; a second delete finds nothing and succeeds.
    let del = json_out(
        &w.run(&[
            "delete",
            "--name",
            "poolpilot-pool",
            "--bucket",
            "images",
            "--json",
        ])
        .await,
    );
    assert_eq!(
        del["deleted-templates"],
        serde_json::json!([id.to_string()])
    );
    assert_eq!(del["deleted-object"], "images/poolpilot-pool.qcow2");
    assert!(w.private_templates().await.is_empty());
    assert_eq!(
        w.client().get_template(id).await.unwrap_err().status(),
        Some(404)
    );
    assert!(
        w.moto
            .object("images", "poolpilot-pool.qcow2")
            .await
            .is_none()
    );
    let again = json_out(
        &w.run(&[
            "delete",
            "--name",
            "poolpilot-pool",
            "--bucket",
            "images",
            "--json",
        ])
        .await,
    );
    assert_eq!(again["deleted-templates"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_image_under_the_same_name_replaces_the_older_template() {
    let w = World::start().await;
    let v1 = w.image("v1.qcow2", &image_bytes(4096, 1));
    let v2 = w.image("v2.qcow2", &image_bytes(4096, 2));
    let first = json_out(&w.push("images", "monitor", &v1, &[]).await);
    let second = json_out(
        &w.push("images", "monitor", &v2, &["--boot-mode", "uefi"])
            .await,
    );
    assert_ne!(first["id"], second["id"]);
    assert_eq!(second["replaced"], serde_json::json!([first["id"]]));
    let left = w.private_templates().await;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].id.to_string(), second["id"].as_str().unwrap());
    assert_eq!(left[0].boot_mode.as_deref(), Some("uefi"));
    // By id, with the object's key.
    let id = second["id"].as_str().unwrap();
    let del = json_out(
        &w.run(&[
            "delete",
            "--id",
            id,
            "--bucket",
            "images",
            "--key",
            "monitor.qcow2",
            "--json",
        ])
        .await,
    );
    assert_eq!(del["deleted-templates"], serde_json::json!([id]));
    assert!(w.private_templates().await.is_empty());
    assert!(w.moto.object("images", "monitor.qcow2").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_corrupted_in_storage_before_its_download_is_refused_and_leaves_nothing() {
    let w = World::start().await;
    let bytes = image_bytes(64 * 1024, 3);
    let file = w.image("pool.qcow2", &bytes);
    // Registrations wait for their download until released: the object is changed in between.
    let hold = |on: bool| {
        let url = w.sim.admin("/template-downloads");
        async move {
            let r = reqwest::Client::new()
                .put(url)
                .json(&serde_json::json!({ "hold": on }))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
        }
    };
    hold(true).await;
    let push = w
        .command(&[
            "push",
            "--bucket",
            "images",
            "--name",
            "pool",
            "--file",
            file.to_str().unwrap(),
        ])
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while w.sim.requests_to("POST", "/v2/template") == 0 {
        assert!(Instant::now() < deadline, "the push never registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut corrupted = bytes.clone();
    corrupted[1000] ^= 0xff;
    w.moto.overwrite("images", "pool.qcow2", corrupted).await;
    hold(false).await;
    let o = push.wait_with_output().await.unwrap();
    let t = all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("the API refused template `pool`"), "{t}");
    assert!(t.contains("checksum mismatch"), "{t}");
    assert!(t.contains(&md5_hex(&bytes)), "{t}");
    assert!(t.contains("object images/pool.qcow2 deleted"), "{t}");
    assert!(w.private_templates().await.is_empty());
    assert!(w.moto.object("images", "pool.qcow2").await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_checksum_is_refused_before_registration_and_leaves_nothing() {
    let w = World::start().await;
    let bytes = image_bytes(64 * 1024, 4);
    let file = w.image("pool.qcow2", &bytes);
    let wrong = md5_hex(b"some other image");
    let o = w
        .push("images", "pool", &file, &["--checksum", &wrong])
        .await;
    let t = all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(t.contains("--checksum says") && t.contains(&wrong), "{t}");
    assert!(t.contains(&md5_hex(&bytes)), "{t}");
    assert!(t.contains("nothing was registered"), "{t}");
    assert_eq!(w.sim.requests_to("POST", "/v2/template"), 0);
    assert!(w.private_templates().await.is_empty());
    assert!(w.moto.object("images", "pool.qcow2").await.is_none());

    // With the right one, the same push goes through.
    let right = md5_hex(&bytes);
    let ok = json_out(
        &w.push("images", "pool", &file, &["--checksum", &right])
            .await,
    );
    assert_eq!(ok["checksum"], right.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_of_another_account_is_named_in_the_error() {
    let w = World::start().await;
    w.moto.foreign_bucket("someone-elses").await;
    let file = w.image("pool.qcow2", &image_bytes(4096, 5));
    let o = w.push("someone-elses", "pool", &file, &[]).await;
    let t = all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{t}");
    assert!(
        t.contains("bucket `someone-elses` belongs to someone else"),
        "{t}"
    );
    assert!(t.contains("BucketAlreadyExists"), "{t}");
    assert_eq!(w.sim.requests_to("POST", "/v2/template"), 0);
    assert!(w.private_templates().await.is_empty());
}

#[test]
fn bad_input_exits_64_naming_the_field_before_any_network_call() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("ok.qcow2");
    std::fs::write(&image, b"image").unwrap();
    let empty = dir.path().join("empty.qcow2");
    std::fs::write(&empty, b"").unwrap();
    let missing = dir.path().join("missing.qcow2");
    let (image, empty, missing) = (
        image.to_str().unwrap().to_owned(),
        empty.to_str().unwrap().to_owned(),
        missing.to_str().unwrap().to_owned(),
    );
    let base = |file: &str| -> Vec<String> {
        [
            "push", "--bucket", "images", "--name", "pool", "--file", file,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let with = |file: &str, extra: &[&str]| {
        let mut v = base(file);
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let cases = vec![
        (with(&missing, &[]), "--file"),
        (with(&empty, &[]), "--file"),
        (with(dir.path().to_str().unwrap(), &[]), "--file"),
        (with(&image, &["--zone", "mars-1"]), "--zone"),
        (with(&image, &["--checksum", "abc"]), "--checksum"),
        (with(&image, &["--expires", "10s"]), "--expires"),
        (with(&image, &["--expires", "8d"]), "--expires"),
        (with(&image, &["--wait-timeout", "0s"]), "--wait-timeout"),
        (
            with(&image, &["--sos-endpoint", "not a url"]),
            "--sos-endpoint",
        ),
        (
            vec![
                "push",
                "--bucket",
                "Not_A_Bucket",
                "--name",
                "pool",
                "--file",
                &image,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "--bucket",
        ),
        (
            vec!["delete", "--id", "nope"]
                .into_iter()
                .map(String::from)
                .collect(),
            "--id",
        ),
        (
            vec![
                "delete",
                "--id",
                "4c2f8e0a-1b2c-4d3e-8f90-a1b2c3d4e5f6",
                "--bucket",
                "images",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            "--key",
        ),
        (vec!["delete".to_owned()], "--name"),
    ];
    each_exits_64_naming_the_field(
        cases,
        |args| {
            // An endpoint nothing listens on: reaching it would fail differently (exit 1).
            base_command()
                .env("EXOSCALE_API_ENDPOINT", "http://127.0.0.1:9/v2")
                .env("EXOSCALE_API_KEY", KEY)
                .env("EXOSCALE_API_SECRET", SECRET)
                .arg("template")
                .args(args)
                .args(if args.iter().any(|a| a == "--sos-endpoint") {
                    vec![]
                } else {
                    vec!["--sos-endpoint".to_owned(), "http://127.0.0.1:9".to_owned()]
                })
                .output()
                .unwrap()
        },
        all_output,
    );
    // Without credentials: named too.
    let o = base_command()
        .args(["template"])
        .args(base(&image))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64), "{}", all_output(&o));
    assert!(
        all_output(&o).contains("EXOSCALE_API_KEY"),
        "{}",
        all_output(&o)
    );
}
