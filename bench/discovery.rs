//! Discovery cycle cost: render and atomically write the file_sd file for a 2,000-member pool
//! (goal: under 50 ms per cycle), side by side with an unsafe in-place write of the same bytes
//! to show what the atomicity costs. Run with `bench/discovery.sh`.

use std::time::{Duration, Instant};

use poolpilot::config::Zone;
use poolpilot::discovery::{DEFAULT_TARGET, Member, file_sd, render};

const MEMBERS: u32 = 2000;
const CYCLES: usize = 60;

fn members(generation: u32) -> Vec<Member> {
    let pool = uuid::Uuid::from_u128(42);
    (0..MEMBERS)
        .map(|i| Member {
            pool,
            zone: Zone::DEFAULT,
            instance: serde_json::from_value(serde_json::json!({
                "id": uuid::Uuid::from_u128(((generation as u128) << 32) | i as u128),
                "name": format!("pool-42-{i:05}"),
                "state": if i % 10 == 0 { "starting" } else { "running" },
                "public-ip": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            }))
            .unwrap(),
        })
        .collect()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let generations = [members(0), members(1)];
    let ports = [DEFAULT_TARGET, "app=8080".parse().unwrap()];
    let (mut ours, mut naive, mut render_only) = (Vec::new(), Vec::new(), Vec::new());
    let mut bytes_len = 0;
    for c in 0..CYCLES {
        // Alternate the membership so that every cycle really writes.
        let m = &generations[c % 2];
        let t = Instant::now();
        let bytes = file_sd::to_bytes(&render(m, &ports));
        render_only.push(t.elapsed());
        let w = file_sd::write_if_changed(&path, &bytes).unwrap();
        ours.push(t.elapsed());
        assert_eq!(w, file_sd::Written::Replaced);
        bytes_len = bytes.len();

        let t = Instant::now();
        let bytes = file_sd::to_bytes(&render(m, &ports));
        std::fs::write(dir.path().join("naive.json"), &bytes).unwrap();
        naive.push(t.elapsed());
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let (o, n, r) = (median(ours), median(naive), median(render_only));
    println!(
        "discovery cycle, {MEMBERS} members x {} ports = {} targets, {} KiB, median of {CYCLES}:",
        ports.len(),
        MEMBERS as usize * ports.len(),
        bytes_len / 1024
    );
    let row = |label: &str, value: f64, unit: &str, note: &str| {
        println!("  {label:<40}{value:8.2} {unit:<3}{note}");
    };
    row("render only", ms(r), "ms", "");
    row(
        "render + atomic write (fsync, rename)",
        ms(o),
        "ms",
        "(goal < 50 ms)",
    );
    row("render + in-place write (unsafe)", ms(n), "ms", "");
    row("ratio atomic / in-place", ms(o) / ms(n), "", "");
    row(
        "ratio goal / atomic",
        50.0 / ms(o),
        "",
        "(>= 1 meets the goal)",
    );
}
