//! Connection floods against every HTTP listener of `polly serve` (admin, libStorage, storage
//! offers, broker): 2,000 idle sockets and 50 slowloris sockets (a header a byte at a time)
//! do not lock a listener out. Health and a real request still answer, and the server closes
//! the idle and slow sockets once `[http] header_timeout_secs` has passed.

mod harness;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::broker::{PASSWORD, USER};
use harness::Polly;

const IDLE: usize = 2000;
const SLOW: usize = 50;

/// Raise this process's open-files soft limit to its hard limit (the sockets below are
/// files).
fn raise_files_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain struct owned here.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(
        lim.rlim_cur as usize > IDLE + SLOW + 200,
        "the test needs an open-files hard limit above {}, not {}",
        IDLE + SLOW + 200,
        lim.rlim_cur
    );
}

fn addr(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

/// A GET on a fresh connection: the status, or why none came within `bound` (a liveness
/// bound, not a speed measure: a locked-out listener never answers).
fn get(url: &str, auth: bool, bound: Duration) -> Result<u16, String> {
    use base64::Engine as _;
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let mut s = TcpStream::connect(host).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(bound)).unwrap();
    let mut req = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nX-Broker-API-Version: 2.17\r\nConnection: close\r\n"
    );
    if auth {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASSWORD}"));
        req.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head).to_string();
    line.strip_prefix("HTTP/1.1 ")
        .and_then(|c| c.trim().parse().ok())
        .ok_or(line)
}

/// Whether the server closed `s` within `bound` (EOF or a reset on read).
fn closed_by_server(s: &mut TcpStream, bound: Duration) -> bool {
    s.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 512];
    let start = Instant::now();
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            // A 408 or similar before the close is fine: keep reading to the end.
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
        if start.elapsed() > bound {
            return false;
        }
    }
}

#[test]
fn idle_and_slow_sockets_lock_no_listener_out() {
    raise_files_limit();
    let config = format!(
        "[http]\nheader_timeout_secs = 2\n\n[broker]\nlisten = \"127.0.0.1:0\"\nusername = \"{USER}\"\npassword = \"{PASSWORD}\"\n"
    );
    let p = Polly::start_config(&config);
    let broker = p.broker.clone().expect("broker listening");
    let health = format!("{}/admin/health", p.admin);
    let listeners = [
        (
            "admin",
            p.admin.clone(),
            format!("{}/admin/volumes", p.admin),
            false,
        ),
        (
            "libStorage",
            p.libstorage.clone(),
            format!("{}/volumes", p.libstorage),
            false,
        ),
        (
            "storage offers",
            p.offers.clone(),
            format!("{}/version", p.offers),
            false,
        ),
        (
            "broker",
            broker.clone(),
            format!("{broker}/v2/catalog"),
            true,
        ),
    ];
    for (name, base, real, auth) in listeners {
        let target = addr(&base);
        let mut idle: Vec<TcpStream> = (0..IDLE)
            .map(|i| {
                TcpStream::connect(&target)
                    .unwrap_or_else(|e| panic!("{name}: idle socket {i}: {e}"))
            })
            .collect();
        // Slowloris: a request head started and never finished, a byte at a time.
        let mut slow: Vec<TcpStream> = (0..SLOW)
            .map(|_| {
                let mut s = TcpStream::connect(&target).unwrap();
                s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                    .unwrap();
                s
            })
            .collect();
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        let bound = Duration::from_secs(5);
        assert_eq!(get(&health, false, bound), Ok(200), "{name}: health");
        assert_eq!(get(&real, auth, bound), Ok(200), "{name}: {real}");
        // The server lets go of them: a sample of idle sockets and every slow one is closed
        // once the head deadline (2 s) has passed.
        for (i, s) in idle.iter_mut().step_by(200).enumerate() {
            assert!(
                closed_by_server(s, Duration::from_secs(15)),
                "{name}: idle socket {i} still open"
            );
        }
        for (i, s) in slow.iter_mut().enumerate() {
            let _ = s.write_all(b"a");
            assert!(
                closed_by_server(s, Duration::from_secs(15)),
                "{name}: slow socket {i} still open"
            );
        }
        drop(idle);
        drop(slow);
    }
}
