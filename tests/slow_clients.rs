//! The webhook server against slow and greedy clients, over real sockets: a client that trickles
//! its headers or its body cannot hold a connection open (without a token, anyone who reaches
//! the port could otherwise), others are served meanwhile, and past the connection cap new
//! connections are closed at once. The deadlines are short here; the bounds in the assertions
//! are generous: they prove "cut off", not "how fast".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use poolpilot::autoscaler::server::{self, ServerState};
use poolpilot::autoscaler::{Bounds, Inbox, Metrics, PoolHandle, Pools, Shared};
use poolpilot::shutdown::{Limits, serve_with};

async fn start(limits: Limits) -> (SocketAddr, Arc<Inbox>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let inbox = Arc::new(Inbox::default());
    let state = ServerState {
        pools: Pools::new(vec![PoolHandle::single(
            inbox.clone(),
            Arc::new(Shared::new(Bounds { min: 1, max: 5 }, false)),
        )]),
        metrics: Metrics::default(),
        registry: Arc::new(prometheus_client::registry::Registry::default()),
        token: None,
        body_timeout: Duration::from_millis(500),
    };
    tokio::spawn(serve_with(
        listener,
        server::router(state),
        std::future::pending(),
        limits,
    ));
    (addr, inbox)
}

/// Reads until the server closes the connection (or the bound passes: then it held it).
fn read_to_close(s: &mut TcpStream, bound: Duration) -> String {
    s.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(_) => {}
        }
        assert!(
            started.elapsed() < bound,
            "the server held the connection for {bound:?}"
        );
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn get_up(addr: SocketAddr) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET /up HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    read_to_close(&mut s, Duration::from_secs(20))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trickled_headers_and_bodies_are_cut_off_while_others_are_served() {
    let (addr, inbox) = start(Limits {
        header_timeout: Duration::from_millis(500),
        max_connections: 64,
    })
    .await;
    tokio::task::spawn_blocking(move || {
        // Headers, one line every 100 ms, never finished.
        let mut heads = TcpStream::connect(addr).unwrap();
        heads.write_all(b"POST /up HTTP/1.1\r\nHost: x\r\n").unwrap();
        // A body promised as 100 bytes, 10 sent.
        let mut body = TcpStream::connect(addr).unwrap();
        body.write_all(
            b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"alerts\":",
        )
        .unwrap();
        let trickler = {
            let mut heads = heads.try_clone().unwrap();
            std::thread::spawn(move || {
                for i in 0..100 {
                    if heads.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).is_err() {
                        return true; // closed by the server
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                false
            })
        };
        // Meanwhile a plain trigger is answered and recorded.
        assert!(get_up(addr).starts_with("HTTP/1.1 200"));
        let answer = read_to_close(&mut body, Duration::from_secs(20));
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        read_to_close(&mut heads, Duration::from_secs(20));
        assert!(trickler.join().unwrap(), "the trickler was never cut off");
    })
    .await
    .unwrap();
    assert_eq!(
        inbox.pending(),
        (1, 0),
        "only the plain trigger was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_new_connections_are_closed_until_one_is_free() {
    let (addr, _) = start(Limits {
        header_timeout: Duration::from_secs(60),
        max_connections: 4,
    })
    .await;
    tokio::task::spawn_blocking(move || {
        let idle: Vec<TcpStream> = (0..4).map(|_| TcpStream::connect(addr).unwrap()).collect();
        // Wait until the server holds all four (a fifth is then closed unanswered).
        let started = Instant::now();
        loop {
            let mut s = TcpStream::connect(addr).unwrap();
            // The server may have closed it already: then the write fails, as it should.
            let _ = s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            if read_to_close(&mut s, Duration::from_secs(20)).is_empty() {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "a fifth connection kept being served"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        drop(idle);
        // Their slots come back: served again.
        let started = Instant::now();
        while !get_up(addr).starts_with("HTTP/1.1 200") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "slots never came back"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap();
}
