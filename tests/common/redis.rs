//! Redis for integration tests.
//!
//! [`redis_url`] gives `REDIS_URL` when set; otherwise it starts ONE throwaway `redis-server` per
//! test process on a free loopback port (no persistence) and keeps it for the life of the process.
//! Tests share that server safely by putting every key under their own [`unique_prefix`].
//!
//! [`RedisServer`] is also public for tests that must stop and restart a server of their own
//! (outage and recovery). Each server runs under a small `sh` watchdog that stops it when the test
//! process is gone, so no redis-server outlives the tests, even after a crash.
#![allow(dead_code, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a starting or stopping redis-server may take before the harness gives up.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs redis-server and stops it when asked (SIGTERM) or when the test process ($2) exits.
/// The shell stays redis-server's parent, so `$r` cannot name another process.
const WATCHDOG: &str = r#"
redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no --dir "$3" \
  --loglevel warning --logfile '' &
r=$!
trap 'kill $r 2>/dev/null; wait $r; exit 0' TERM
while kill -0 "$2" 2>/dev/null && kill -0 $r 2>/dev/null; do sleep 0.2; done
kill $r 2>/dev/null
wait $r
"#;

/// The Redis URL for tests: `REDIS_URL` if set, else the process-wide throwaway server's URL.
pub async fn redis_url() -> String {
    if let Ok(url) = std::env::var("REDIS_URL") {
        if !url.trim().is_empty() {
            return url;
        }
    }
    static SHARED: OnceLock<RedisServer> = OnceLock::new();
    SHARED.get_or_init(RedisServer::start_on_free_port).url()
}

/// A key prefix no other test (in this or another process) uses: `test:{tag}:{pid}:{n}:{nanos}:`.
/// The tag is reduced to `[A-Za-z0-9_-]` so the prefix is also a literal `SCAN MATCH` pattern.
pub fn unique_prefix(tag: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "test:{tag}:{}:{}:{nanos}:",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// A throwaway redis-server on 127.0.0.1, stopped on drop.
#[derive(Debug)]
pub struct RedisServer {
    /// The port it listens on; kept across stop/start for restart tests.
    port: u16,
    /// The watchdog shell; `None` once stopped.
    watchdog: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port, trying a few ports in case one is taken meanwhile.
    pub fn start_on_free_port() -> Self {
        let mut last_error = String::new();
        for _ in 0..5 {
            match Self::start(free_port()) {
                Ok(server) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("could not start redis-server: {last_error}");
    }

    /// Starts a server on `port` and waits until it answers PING.
    pub fn start(port: u16) -> Result<Self, String> {
        let watchdog = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .arg("redis-watchdog")
            .arg(port.to_string())
            .arg(std::process::id().to_string())
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh/redis-server: {e}"))?;
        let mut server = Self {
            port,
            watchdog: Some(watchdog),
        };
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT {
            if ping(port) {
                return Ok(server);
            }
            let exited = server
                .watchdog
                .as_mut()
                .map(|w| matches!(w.try_wait(), Ok(Some(_))))
                .unwrap_or(true);
            if exited {
                server.watchdog = None;
                return Err(format!(
                    "redis-server exited at once on port {port} (port taken, or not installed)"
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        server.stop();
        Err(format!("redis-server on port {port} did not answer PING"))
    }

    /// The port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server and waits until its port refuses connections. Idempotent.
    pub fn stop(&mut self) {
        let Some(mut watchdog) = self.watchdog.take() else {
            return;
        };
        // SIGTERM, not SIGKILL: the watchdog's trap must run to stop redis-server.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(watchdog.id().to_string())
            .status();
        let _ = watchdog.wait();
        let started = Instant::now();
        while started.elapsed() < READY_TIMEOUT && accepts(self.port) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether something accepts TCP connections on the loopback port.
fn accepts(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// Whether a Redis on the loopback port answers PING with PONG.
fn ping(port: u16) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        Duration::from_millis(200),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    if stream.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
}
