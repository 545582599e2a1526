//! `poolpilot kv` against real `redis-server` processes (Debian's redis-server package; .ci/run
//! installs it): every route, 400s for bad input, writes on the primary only, reads from the
//! replica URL only, 503s with nothing written when Redis is down or frozen, reconnection, the
//! exporter, and the binary's configuration, variables and SIGTERM.
//!
//! Each test starts its own servers on free loopback ports, each in its own directory, with no
//! persistence; they die with the test process (`PR_SET_PDEATHSIG`, see `local::process`).

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::redis::Redis;
use poolpilot::kv::{KvConfig, RedisUrl};

/// Serves the API in this process on a loopback port; returns its base URL.
async fn serve(primary: &str, replicas: &str, timeout: Duration) -> String {
    serve_with(primary, replicas, timeout, Default::default()).await
}

const DRAIN: &str = "kv-drain-token";

async fn serve_with(
    primary: &str,
    replicas: &str,
    timeout: Duration,
    replica_conns: poolpilot::kv::ReplicaConns,
) -> String {
    let cfg = KvConfig {
        instance_id: "kv-test-1".into(),
        primary: RedisUrl::parse(primary).unwrap(),
        replicas: RedisUrl::parse_list(replicas).unwrap(),
        timeout,
        replica_conns,
        drain_token: Some(DRAIN.into()),
    };
    let router = poolpilot::kv::router(&cfg).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(poolpilot::shutdown::serve_until(
        listener,
        router,
        std::future::pending(),
    ));
    base
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap()
}

/// Status, content type and body of one request.
async fn call(method: &str, url: &str, body: Option<&str>) -> (u16, String, String) {
    let mut req = http().request(method.parse().unwrap(), url);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, ctype, resp.text().await.unwrap())
}

async fn get(url: &str) -> (u16, String) {
    let (s, _, b) = call("GET", url, None).await;
    (s, b)
}

async fn post(base: &str, body: &str) -> (u16, String) {
    let (s, _, b) = call("POST", &format!("{base}/item"), Some(body)).await;
    (s, b)
}

async fn delete(base: &str, body: &str) -> (u16, String) {
    let (s, _, b) = call("DELETE", &format!("{base}/item"), Some(body)).await;
    (s, b)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Polls an async condition every 20 ms for at most 20 s.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The value of one series in a `/metrics` body (0 when absent).
fn series(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|v| v.strip_prefix(' '))
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_with_a_primary_and_its_replica() {
    let primary = Redis::start();
    let replica = Redis::replica_of(&primary);
    let base = serve(&primary.url(), &replica.url(), Duration::from_secs(2)).await;

    let (s, ctype, body) = call("GET", &format!("{base}/"), None).await;
    assert_eq!((s, body.as_str()), (200, "Hello from kv-test-1"));
    assert!(ctype.starts_with("text/plain"), "{ctype}");

    assert_eq!(
        post(&base, r#"{"id":"fruit:1","val":"kiwi"}"#).await,
        (200, "ok".to_owned())
    );
    assert_eq!(primary.get("fruit:1").as_deref(), Some("kiwi"));
    // The replica serves it once replication carried it over.
    let url = format!("{base}/item?id=fruit%3A1");
    eventually("the write to reach the replica", || async {
        get(&url).await.0 == 200
    })
    .await;
    let (s, body) = get(&url).await;
    assert_eq!(s, 200);
    assert_eq!(
        json(&body),
        serde_json::json!({"id": "fruit:1", "val": "kiwi"})
    );

    assert_eq!(
        post(&base, r#"{"id":"fruit:2","val":"ü \"quoted\""}"#)
            .await
            .0,
        200
    );
    eventually("both keys listed", || async {
        let (s, b) = get(&format!("{base}/items")).await;
        s == 200 && json(&b)["keys"] == serde_json::json!(["fruit:1", "fruit:2"])
    })
    .await;
    let (_, body) = get(&format!("{base}/items")).await;
    assert_eq!(json(&body)["truncated"], false);
    let (_, body) = get(&format!("{base}/item?id=fruit:2")).await;
    assert_eq!(json(&body)["val"], "ü \"quoted\"");

    // DELETE removes the key on the primary (and so on the replica); a second one is a 404.
    assert_eq!(
        delete(&base, r#"{"id":"fruit:1"}"#).await,
        (200, "ok".to_owned())
    );
    assert_eq!(primary.get("fruit:1"), None);
    let (s, body) = delete(&base, r#"{"id":"fruit:1"}"#).await;
    assert_eq!(s, 404, "{body}");
    assert!(json(&body)["error"].as_str().unwrap().contains("fruit:1"));
    eventually("the delete to reach the replica", || async {
        get(&url).await.0 == 404
    })
    .await;
    // `?id=` works for DELETE when there is no body.
    let (s, _, _) = call("DELETE", &format!("{base}/item?id=fruit:2"), None).await;
    assert_eq!(s, 200);
    assert_eq!(primary.dbsize(), 0);

    let (s, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(s, 200);
    let h = json(&body);
    assert_eq!(
        (&h["status"], &h["primary"], &h["replicas"], &h["instance"]),
        (
            &serde_json::json!("ok"),
            &serde_json::json!("up"),
            &serde_json::json!(["up"]),
            &serde_json::json!("kv-test-1")
        )
    );

    let (s, ctype, body) = call("GET", &format!("{base}/ui"), None).await;
    assert_eq!(s, 200);
    assert!(ctype.starts_with("text/html"), "{ctype}");
    assert!(body.contains("<script>") && body.contains("fetch('/items')"));

    let (s, body) = get(&format!("{base}/nope")).await;
    assert_eq!(s, 404);
    assert_eq!(json(&body)["error"], "not found");

    let (s, body) = get(&format!("{base}/metrics")).await;
    assert_eq!(s, 200);
    for (labels, at_least) in [
        (r#"route="item",method="POST",code="200""#, 2.0),
        (r#"route="item",method="DELETE",code="200""#, 2.0),
        (r#"route="item",method="DELETE",code="404""#, 1.0),
        (r#"route="items",method="GET",code="200""#, 2.0),
        (r#"route="root",method="GET",code="200""#, 1.0),
        (r#"route="other",method="GET",code="404""#, 1.0),
    ] {
        let n = series(
            &body,
            &format!("poolpilot_kv_http_requests_total{{{labels}}}"),
        );
        assert!(n >= at_least, "{labels}: {n}\n{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_or_invalid_input_is_refused_and_writes_nothing() {
    let primary = Redis::start();
    let base = serve(&primary.url(), &primary.url(), Duration::from_secs(2)).await;
    let long_id = "k".repeat(poolpilot::kv::MAX_ID_BYTES + 1);
    let long_val = "v".repeat(poolpilot::kv::MAX_VAL_BYTES + 1);
    let long_id_body = format!(r#"{{"id":"{long_id}","val":"x"}}"#);
    let long_val_body = format!(r#"{{"id":"a","val":"{long_val}"}}"#);
    for (method, path, body, why) in [
        ("GET", "/item", None, "`id` is required"),
        ("GET", "/item?id=", None, "empty"),
        ("GET", "/item?key=a", None, "`id` is required"),
        ("POST", "/item", None, "not JSON"),
        ("POST", "/item", Some("not json"), "not JSON"),
        ("POST", "/item", Some(r#"["a","b"]"#), "JSON object"),
        ("POST", "/item", Some(r#"{"val":"x"}"#), "`id` is required"),
        ("POST", "/item", Some(r#"{"id":"a"}"#), "`val` is required"),
        (
            "POST",
            "/item",
            Some(r#"{"id":7,"val":"x"}"#),
            "`id` must be a string",
        ),
        (
            "POST",
            "/item",
            Some(r#"{"id":"a","val":7}"#),
            "`val` must be a string",
        ),
        ("POST", "/item", Some(r#"{"id":"","val":"x"}"#), "empty"),
        (
            "POST",
            "/item",
            Some(r#"{"id":"a\nb","val":"x"}"#),
            "control",
        ),
        ("POST", "/item", Some(&long_id_body), "longer than 256"),
        ("POST", "/item", Some(&long_val_body), "longer than 65536"),
        ("DELETE", "/item", None, "`id` is required"),
        ("DELETE", "/item", Some("{}"), "`id` is required"),
        ("DELETE", "/item", Some(r#"{"id":""}"#), "empty"),
    ] {
        let (s, ctype, text) = call(method, &format!("{base}{path}"), body).await;
        assert_eq!(s, 400, "{method} {path} {body:?}: {text}");
        assert!(ctype.starts_with("application/json"), "{ctype}");
        let e = json(&text)["error"].as_str().unwrap().to_owned();
        assert!(e.contains(why), "{method} {path}: {e}");
    }
    // A body past the limit is refused before it is read whole.
    let huge = format!(
        r#"{{"id":"a","val":"{}"}}"#,
        "v".repeat(poolpilot::kv::BODY_LIMIT)
    );
    assert_eq!(post(&base, &huge).await.0, 413);
    assert_eq!(primary.dbsize(), 0, "nothing was written");
    // And the same server takes a valid write, so the refusals were the input's.
    assert_eq!(post(&base, r#"{"id":"a","val":"x"}"#).await.0, 200);
    assert_eq!(primary.dbsize(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_go_to_the_primary_only_and_reads_to_the_replica_url_only() {
    // The "replica" is a standalone server, not a replica: whatever the API reads, it read there,
    // and whatever lands there, the API wrote there (nothing replicates into it).
    let primary = Redis::start();
    let standalone = Redis::start();
    let base = serve(&primary.url(), &standalone.url(), Duration::from_secs(2)).await;

    assert_eq!(post(&base, r#"{"id":"k","val":"on-primary"}"#).await.0, 200);
    assert_eq!(primary.get("k").as_deref(), Some("on-primary"));
    assert_eq!(standalone.dbsize(), 0, "a write reached the replica URL");
    // The primary has `k`, the replica URL does not: the read went to the replica URL.
    assert_eq!(get(&format!("{base}/item?id=k")).await.0, 404);

    standalone.set("k", "on-replica");
    standalone.set("only-on-replica", "1");
    let (s, body) = get(&format!("{base}/item?id=k")).await;
    assert_eq!((s, json(&body)["val"].clone()), (200, "on-replica".into()));
    let (_, body) = get(&format!("{base}/items")).await;
    assert_eq!(
        json(&body)["keys"],
        serde_json::json!(["k", "only-on-replica"])
    );

    // DELETE goes to the primary only.
    assert_eq!(delete(&base, r#"{"id":"k"}"#).await.0, 200);
    assert_eq!(primary.get("k"), None);
    assert_eq!(standalone.get("k").as_deref(), Some("on-replica"));
    let (s, _) = delete(&base, r#"{"id":"only-on-replica"}"#).await;
    assert_eq!(s, 404, "the primary has no such key");
    assert_eq!(standalone.dbsize(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_take_each_replica_in_turn_and_skip_one_that_is_down() {
    let primary = Redis::start();
    let mut a = Redis::start();
    let b = Redis::start();
    a.set("k", "from-a");
    b.set("k", "from-b");
    let base = serve(
        &primary.url(),
        &format!("{},{}", a.url(), b.url()),
        Duration::from_secs(2),
    )
    .await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let (s, body) = get(&format!("{base}/item?id=k")).await;
        assert_eq!(s, 200);
        seen.insert(json(&body)["val"].as_str().unwrap().to_owned());
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["from-a", "from-b"]);
    a.stop();
    for _ in 0..4 {
        let (s, body) = get(&format!("{base}/item?id=k")).await;
        assert_eq!((s, json(&body)["val"].clone()), (200, "from-b".into()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_answers_503_writes_nothing_anywhere_and_recovers() {
    let mut primary = Redis::start();
    let standalone = Redis::start();
    standalone.set("present", "yes");
    let base = serve(&primary.url(), &standalone.url(), Duration::from_secs(2)).await;
    assert_eq!(post(&base, r#"{"id":"before","val":"1"}"#).await.0, 200);

    primary.stop();
    let (s, body) = post(&base, r#"{"id":"during","val":"1"}"#).await;
    assert_eq!(s, 503, "{body}");
    let e = json(&body);
    assert_eq!(e["redis"], "primary");
    assert!(e["error"].as_str().unwrap().contains("unavailable"), "{e}");
    let (s, _) = delete(&base, r#"{"id":"present"}"#).await;
    assert_eq!(s, 503);
    // Nothing went to the replica URL instead, and reads go on from it.
    assert_eq!(standalone.get("during"), None);
    assert_eq!(standalone.get("present").as_deref(), Some("yes"));
    assert_eq!(get(&format!("{base}/item?id=present")).await.0, 200);
    let (_, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(json(&body)["primary"], "down");
    assert_eq!(json(&body)["replicas"], serde_json::json!(["up"]));
    let (_, metrics) = get(&format!("{base}/metrics")).await;
    assert!(
        series(
            &metrics,
            r#"poolpilot_kv_redis_failures_total{side="primary",kind="unavailable"}"#
        ) >= 2.0,
        "{metrics}"
    );
    assert!(
        series(
            &metrics,
            r#"poolpilot_kv_http_requests_total{route="item",method="POST",code="503"}"#
        ) >= 1.0
    );

    // The same address back (empty: no persistence): the API reconnects by itself.
    primary.launch();
    eventually("a write to succeed again", || async {
        post(&base, r#"{"id":"after","val":"2"}"#).await.0 == 200
    })
    .await;
    assert_eq!(primary.get("after").as_deref(), Some("2"));
    assert_eq!(primary.get("during"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_down_answers_503_on_reads_while_writes_go_on() {
    let primary = Redis::start();
    let mut replica = Redis::replica_of(&primary);
    let base = serve(&primary.url(), &replica.url(), Duration::from_secs(2)).await;
    assert_eq!(post(&base, r#"{"id":"a","val":"1"}"#).await.0, 200);
    replica.stop();
    for path in ["/item?id=a", "/items"] {
        let (s, body) = get(&format!("{base}{path}")).await;
        assert_eq!(s, 503, "{path}: {body}");
        assert_eq!(json(&body)["redis"], "replica");
    }
    assert_eq!(
        post(&base, r#"{"id":"b","val":"2"}"#).await,
        (200, "ok".into())
    );
    assert_eq!(primary.get("b").as_deref(), Some("2"));
    let (_, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(json(&body)["primary"], "up");
    assert_eq!(json(&body)["replicas"], serde_json::json!(["down"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_primary_answers_503_within_the_timeout_then_recovers() {
    let primary = Redis::start();
    let base = serve(&primary.url(), &primary.url(), Duration::from_millis(300)).await;
    assert_eq!(post(&base, r#"{"id":"a","val":"1"}"#).await.0, 200);
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &primary.pid().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
    };
    signal("-STOP");
    // The client waits 15 s; the API gives up on Redis after 300 ms and says so.
    let (s, body) = post(&base, r#"{"id":"b","val":"2"}"#).await;
    let (rs, rbody) = get(&format!("{base}/item?id=a")).await;
    signal("-CONT");
    assert_eq!(s, 503, "{body}");
    assert!(
        json(&body)["error"]
            .as_str()
            .unwrap()
            .contains("unavailable"),
        "{body}"
    );
    assert_eq!(rs, 503, "{rbody}");
    eventually("a write to succeed again", || async {
        post(&base, r#"{"id":"c","val":"3"}"#).await.0 == 200
    })
    .await;
    assert_eq!(primary.get("c").as_deref(), Some("3"));
}

/// `promtool check metrics` on the exporter after traffic of every kind (Debian's prometheus).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_metrics_pass_promtool() {
    let mut primary = Redis::start();
    let base = serve(&primary.url(), &primary.url(), Duration::from_secs(1)).await;
    post(&base, r#"{"id":"a","val":"1"}"#).await;
    get(&format!("{base}/item?id=a")).await;
    get(&format!("{base}/item")).await;
    get(&format!("{base}/items")).await;
    primary.stop();
    post(&base, r#"{"id":"a","val":"1"}"#).await;
    let (s, ctype, text) = call("GET", &format!("{base}/metrics"), None).await;
    assert_eq!(s, 200);
    assert!(ctype.starts_with("text/plain; version=0.0.4"), "{ctype}");
    common::promtool_accepts(&text);
    for line in [
        "# TYPE poolpilot_kv_http_requests_total counter",
        "# TYPE poolpilot_kv_http_request_duration_seconds histogram",
        "# TYPE poolpilot_kv_redis_failures_total counter",
        r#"poolpilot_kv_http_request_duration_seconds_bucket{le="+Inf",route="item",method="GET",code="200"} 1"#,
        r#"poolpilot_kv_http_requests_total{route="item",method="GET",code="400"} 1"#,
        r#"poolpilot_kv_http_requests_total{route="item",method="POST",code="503"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
    }
}

/// `poolpilot kv ARGS` under `setpriv --pdeathsig TERM`, so it dies with the test; poolpilot's
/// own variables scrubbed as in every test.
fn kv_binary(args: &[&str]) -> Command {
    let mut c = binary(&["kv"]);
    c.args(args);
    c
}

/// `poolpilot ARGS`, dying with the test.
fn binary(args: &[&str]) -> Command {
    let base = common::base_command();
    let mut c = Command::new("setpriv");
    c.args(["--pdeathsig", "TERM"])
        .arg(base.get_program())
        .args(args);
    for (k, v) in base.get_envs() {
        match v {
            Some(v) => c.env(k, v),
            None => c.env_remove(k),
        };
    }
    c.stdin(Stdio::null());
    c
}

#[test]
fn bad_configuration_exits_64_naming_the_field_before_binding() {
    // Every case also asks for a port held here: binding first would fail with exit 1.
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let listen = held.local_addr().unwrap().to_string();
    /// Variables, flags, and the field the error must name.
    type Case<'a> = (Vec<(&'a str, &'a str)>, Vec<&'a str>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec![("REDIS_URL", "http://127.0.0.1:6379")],
            vec![],
            "REDIS_URL",
        ),
        (vec![("REDIS_URL", "127.0.0.1:6379")], vec![], "REDIS_URL"),
        (vec![("REDIS_URL", "rediss://h:6379")], vec![], "REDIS_URL"),
        (
            vec![("REDIS_REPLICAS_URL", "redis://a:1,nope")],
            vec![],
            "REDIS_REPLICAS_URL",
        ),
        (vec![], vec!["--redis-timeout", "0s"], "redis-timeout"),
        (vec![], vec!["--instance-id", " "], "instance-id"),
        (
            vec![],
            vec!["--replica-connections", "0"],
            "replica-connections",
        ),
        (
            vec![],
            vec!["--replica-reconnect", "500ms"],
            "replica-reconnect",
        ),
    ];
    common::each_exits_64_naming_the_field(
        cases.iter().map(|(env, args, field)| ((env, args), *field)),
        |(env, args)| {
            kv_binary(&["--listen", &listen])
                .args(args.iter())
                .envs(env.iter().copied())
                .output()
                .unwrap()
        },
        common::stderr,
    );
    // PORT is checked the same way (with no --listen, which would win over it).
    for port in ["99999", "0", "http"] {
        let o = kv_binary(&[]).env("PORT", port).output().unwrap();
        assert_eq!(o.status.code(), Some(64), "{}", common::stderr(&o));
        assert!(
            common::stderr(&o).contains("PORT"),
            "{}",
            common::stderr(&o)
        );
    }
    // A password in a bad URL is never echoed.
    let o = kv_binary(&["--listen", &listen])
        .env("REDIS_URL", "redis://:hunter2-secret@h:1/notadb")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(!common::all_output(&o).contains("hunter2-secret"));
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_with_the_reference_variables_and_stops_on_sigterm() {
    let password = "s3cret-redis-pw";
    let primary = Redis::with(&["--requirepass", password]);
    let replica = Redis::with(&[
        "--replicaof",
        "127.0.0.1",
        &primary.port.to_string(),
        "--masterauth",
        password,
        "--requirepass",
        password,
    ]);
    let port = common::free_port();
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = kv_binary(&[])
        .env("REDIS_URL", primary.url())
        .env("REDIS_REPLICAS_URL", replica.url())
        .env("PORT", port.to_string())
        .env("POOLPILOT_KV_INSTANCE_ID", "member-7")
        .stdout(Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    eventually("the API to answer", || async {
        http()
            .get(format!("{base}/"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    assert_eq!(get(&format!("{base}/")).await.1, "Hello from member-7");
    assert_eq!(
        post(&base, r#"{"id":"x","val":"y"}"#).await,
        (200, "ok".into())
    );
    eventually("the read through the replica", || async {
        get(&format!("{base}/item?id=x")).await.0 == 200
    })
    .await;

    assert_eq!(common::sigterm(&mut child).0, 0);
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(
        logs.contains("kv serving") && logs.contains("SIGTERM"),
        "{logs}"
    );
    assert!(!logs.contains(password), "the password was logged:\n{logs}");
    assert!(logs.contains(&format!("redis://127.0.0.1:{}", primary.port)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_member_fails_its_check_and_still_answers() {
    let primary = Redis::start();
    let base = serve(&primary.url(), &primary.url(), Duration::from_secs(1)).await;
    assert_eq!(get(&format!("{base}/health")).await, (200, "OK".into()));
    let drain = |method: reqwest::Method, token: &'static str| {
        let url = format!("{base}/admin/drain");
        async move {
            http()
                .request(method, url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(drain(reqwest::Method::POST, "wrong").await, 401);
    assert_eq!(drain(reqwest::Method::POST, DRAIN).await, 200);
    assert_eq!(
        get(&format!("{base}/health")).await,
        (503, "draining".into())
    );
    // Requests under way and new ones (from clients that still hold a connection) succeed.
    assert_eq!(post(&base, r#"{"id":"d","val":"1"}"#).await.0, 200);
    let metrics = get(&format!("{base}/metrics")).await.1;
    assert_eq!(series(&metrics, "poolpilot_kv_draining"), 1.0);
    assert_eq!(drain(reqwest::Method::DELETE, DRAIN).await, 200);
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
}

/// A TCP balancer like the NLB: each connection to the next backend in turn; one that refuses
/// is closed at once (the client sees its connection drop).
async fn tcp_balancer(backends: Vec<u16>) -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut next = 0usize;
        loop {
            let (mut c, _) = l.accept().await.unwrap();
            let b = backends[next % backends.len()];
            next += 1;
            tokio::spawn(async move {
                if let Ok(mut m) = tokio::net::TcpStream::connect(("127.0.0.1", b)).await {
                    let _ = tokio::io::copy_bidirectional(&mut c, &mut m).await;
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_tcp_balancer_reads_follow_the_rotation_and_survive_a_replica_going_away() {
    let primary = Redis::start();
    let mut a = Redis::start();
    let b = Redis::start();
    a.set("k", "a");
    b.set("k", "b");
    let lb = tcp_balancer(vec![a.port, b.port]).await;
    let conns = poolpilot::kv::ReplicaConns {
        per_address: 1,
        max_age: Duration::from_secs(1),
    };
    let base = serve_with(
        &primary.url(),
        &format!("redis://127.0.0.1:{lb}"),
        Duration::from_secs(1),
        conns,
    )
    .await;
    let read = || async { get(&format!("{base}/item?id=k")).await };
    // One connection, replaced every second: the reads reach both replicas in time.
    let mut seen = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while seen.len() < 2 {
        let (code, body) = read().await;
        assert_eq!(code, 200, "{body}");
        seen.insert(json(&body)["val"].as_str().unwrap().to_owned());
        assert!(Instant::now() < deadline, "reads stayed on {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A replica goes away (evicted): every read still succeeds, on the other one.
    a.stop();
    for _ in 0..40 {
        let (code, body) = read().await;
        assert_eq!(code, 200, "{body}");
        assert_eq!(json(&body)["val"], "b");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_load_records_every_acknowledged_write_and_verify_finds_a_lost_one() {
    use poolpilot::load::kv::{KvLoad, KvWorkload, read_record, verify};
    use poolpilot::load::{LoadConfig, Mode, Profile};
    let primary = Redis::start();
    let replica = Redis::replica_of(&primary);
    let base = serve(&primary.url(), &replica.url(), Duration::from_secs(2)).await;
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("acked.jsonl");
    let workload = std::sync::Arc::new(
        KvWorkload::new(KvLoad {
            base: base.parse().unwrap(),
            write_ratio: 0.5,
            keys: 50,
            acked: Some(record.clone()),
        })
        .unwrap(),
    );
    let cfg = LoadConfig {
        url: base.parse().unwrap(),
        mode: Mode::Closed(Profile::Constant(4.0)),
        duration: None,
        requests: Some(400),
        timeout: Duration::from_secs(5),
    };
    let summary = poolpilot::load::run_kv(cfg, workload.clone(), |_| {})
        .await
        .unwrap();
    let counts = workload.finish().unwrap();
    assert_eq!((summary.requests, summary.failed), (400, 0), "{summary:?}");
    let records = read_record(&record).unwrap();
    // Each write made a key of its own, and each one answered `ok` is in the record.
    assert_eq!(records.len() as u64, counts.writes_acknowledged);
    assert!(counts.writes_acknowledged > 0);
    assert_eq!(
        counts.writes_acknowledged + counts.reads_hit + counts.reads_missed,
        400
    );
    assert_eq!(primary.dbsize(), counts.writes_acknowledged);
    for r in &records {
        assert_eq!(primary.get(&r.id).as_deref(), Some(r.val.as_str()));
    }

    let url: url::Url = base.parse().unwrap();
    let wait = Duration::from_secs(20);
    let v = verify(&url, records.clone(), Duration::from_secs(5), wait, 8)
        .await
        .unwrap();
    assert!(v.all_ok(), "{v:?}");
    assert_eq!(
        (v.acknowledged, v.ok, v.lost),
        (records.len() as u64, records.len() as u64, 0)
    );

    // One write lost (deleted behind the API's back), one changed: both are found, after a
    // short wait this time.
    redis::cmd("DEL")
        .arg(&records[0].id)
        .query::<()>(&mut primary.conn())
        .unwrap();
    if records.len() > 1 {
        primary.set(&records[1].id, "not what was acknowledged");
    }
    eventually("the change to reach the replica", || async {
        get(&format!("{base}/item?id={}", records[0].id)).await.0 == 404
    })
    .await;
    let v = verify(
        &url,
        records.clone(),
        Duration::from_secs(5),
        Duration::from_millis(300),
        8,
    )
    .await
    .unwrap();
    let wrong = u64::from(records.len() > 1);
    assert_eq!((v.lost, v.wrong, v.errors), (1, wrong, 0), "{v:?}");
    assert!(!v.all_ok());

    // The command line says so too, and exits 1.
    let o = binary(&["load", "--url", &base, "--verify"])
        .arg(&record)
        .args(["--verify-wait", "300ms"])
        .output()
        .unwrap();
    let out = common::all_output(&o);
    assert_eq!(o.status.code(), Some(1), "{out}");
    assert!(out.contains("lost 1"), "{out}");

    // The command line's kv profile, then its check of the record.
    let second = dir.path().join("second.jsonl");
    let o = binary(&["load", "--url", &base, "--profile", "kv", "--json"])
        .args([
            "--concurrency",
            "2",
            "--requests",
            "60",
            "--write-ratio",
            "0.5",
        ])
        .arg("--acked")
        .arg(&second)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", common::all_output(&o));
    let s = json(&String::from_utf8_lossy(&o.stdout));
    assert_eq!(
        (s["requests"].as_u64(), s["failed"].as_u64()),
        (Some(60), Some(0))
    );
    let acked = s["kv"]["writes_acknowledged"].as_u64().unwrap();
    assert_eq!(read_record(&second).unwrap().len() as u64, acked);
    let o = binary(&["load", "--url", &base, "--verify"])
        .arg(&second)
        .output()
        .unwrap();
    let out = common::all_output(&o);
    assert!(o.status.success(), "{out}");
    assert!(
        out.contains(&format!("verified {acked} acknowledged writes")) && out.contains("lost 0"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_not_in_sync_that_refuses_stale_reads_is_skipped() {
    // A replica of a primary that is not there never syncs; with `replica-serve-stale-data no`
    // it answers MASTERDOWN, which the API takes as unavailable: the next replica answers.
    let primary = Redis::start();
    let nowhere = common::free_port().to_string();
    let stale = Redis::with(&[
        "--replicaof",
        "127.0.0.1",
        &nowhere,
        "--replica-serve-stale-data",
        "no",
    ]);
    let good = Redis::start();
    good.set("k", "fresh");
    let base = serve(
        &primary.url(),
        &format!("{},{}", stale.url(), good.url()),
        Duration::from_secs(2),
    )
    .await;
    for _ in 0..4 {
        let (s, body) = get(&format!("{base}/item?id=k")).await;
        assert_eq!((s, json(&body)["val"].clone()), (200, "fresh".into()));
    }
    let alone = serve(&primary.url(), &stale.url(), Duration::from_secs(2)).await;
    let (s, body) = get(&format!("{alone}/item?id=k")).await;
    assert_eq!(s, 503, "{body}");
    let e = json(&body)["error"].as_str().unwrap().to_lowercase();
    assert!(
        e.contains("unavailable") && e.contains("masterdown"),
        "{body}"
    );
}
