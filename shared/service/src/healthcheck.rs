//! `<service> healthcheck`: the container's probe, from inside the container.
//!
//! The images are `FROM scratch`: no shell, no curl. So every service binary
//! probes itself: it asks its own `/readyz` (or `/healthz` with `--live`) on
//! the loopback address of the port it listens on (`HENDU_HTTP_ADDR`, or the
//! service's default port), and exits 0 on a 200, 1 on anything else
//! (another status, no answer within the timeout, nothing listening). The
//! request is one plain HTTP/1.1 GET over a socket: the probe must not need
//! the runtime, TLS or the storage settings the service itself needs.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::settings;

/// Largest answer read: the status line, headers and `/readyz`'s reasons.
const MAX_ANSWER: u64 = 8 * 1024;

/// The subcommands every service binary has besides serving.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ServiceCommand {
    /// Ask the service running here whether it is ready (GET /readyz on
    /// 127.0.0.1 and the port of HENDU_HTTP_ADDR, or the default port);
    /// exit 0 on 200, 1 otherwise. For container health checks: the images
    /// have no shell and no curl.
    Healthcheck(HealthcheckArgs),
}

impl ServiceCommand {
    /// Runs the subcommand and exits with its status.
    pub fn exit(self, default_port: u16) -> ! {
        match self {
            Self::Healthcheck(args) => std::process::exit(run(&args, default_port)),
        }
    }
}

/// How to probe.
#[derive(Debug, Clone, clap::Args)]
pub struct HealthcheckArgs {
    /// Ask /healthz (alive: the worker loops make progress) instead of
    /// /readyz (ready: the databases answer, the index is loaded).
    #[arg(long)]
    pub live: bool,
    /// Seconds to wait for the whole answer.
    #[arg(long, value_name = "S", default_value_t = 2.0)]
    pub timeout: f64,
    /// The address to ask (default: 127.0.0.1 and the port of
    /// HENDU_HTTP_ADDR, or the service's default port).
    #[arg(long, value_name = "ADDR")]
    pub addr: Option<SocketAddr>,
}

/// Probes and returns the exit status: 0 for a 200, 1 for anything else
/// (said on stderr), 2 for a malformed setting.
pub fn run(args: &HealthcheckArgs, default_port: u16) -> i32 {
    let addr = match args.addr {
        Some(a) => a,
        None => match settings::http_addr(|k| std::env::var(k).ok(), default_port) {
            Ok(a) => probe_addr(a),
            Err(e) => {
                eprintln!("healthcheck: {e}");
                return 2;
            }
        },
    };
    let Some(timeout) = Duration::try_from_secs_f64(args.timeout)
        .ok()
        .filter(|t| !t.is_zero())
    else {
        eprintln!("healthcheck: --timeout must be a positive number of seconds");
        return 2;
    };
    let path = if args.live { "/healthz" } else { "/readyz" };
    match get(addr, path, timeout) {
        Ok((200, _)) => 0,
        Ok((status, body)) => {
            eprintln!("healthcheck: {path} on {addr} answered {status}: {body}");
            1
        }
        Err(e) => {
            eprintln!("healthcheck: {path} on {addr}: {e}");
            1
        }
    }
}

/// Where a process on the same host (or in the same pod) reaches a
/// listener bound to `bound`: the loopback address for a wildcard.
pub fn probe_addr(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

/// One GET within `timeout`: the status code and the body as text.
///
/// # Errors
/// No connection, a timeout, or an answer that is not HTTP.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> std::io::Result<(u16, String)> {
    let deadline = Instant::now() + timeout;
    let left = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::TimedOut, "timed out"))
    };
    let mut stream = TcpStream::connect_timeout(&addr, left()?)?;
    stream.set_write_timeout(Some(left()?))?;
    // One write: the request whole, not in the pieces a format makes.
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hendu-healthcheck\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut answer = Vec::new();
    let mut chunk = [0u8; 1024];
    let mut limited = (&mut stream).take(MAX_ANSWER);
    loop {
        limited.get_mut().set_read_timeout(Some(left()?))?;
        match limited.read(&mut chunk)? {
            0 => break,
            n => answer.extend_from_slice(&chunk[..n]),
        }
    }
    parse_answer(&answer)
}

/// The status of an HTTP/1.x answer and its body (lossy text, trimmed).
fn parse_answer(answer: &[u8]) -> std::io::Result<(u16, String)> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "not an HTTP answer");
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().ok_or_else(bad)?;
    let mut words = status_line.split(' ');
    if !words.next().is_some_and(|v| v.starts_with("HTTP/1.")) {
        return Err(bad());
    }
    let status = words
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(bad)?;
    Ok((status, body.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// A server that answers one request with `answer`, after `delay`.
    fn answer_once(answer: &'static str, delay: Duration) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            // The whole request head, as a server reads it.
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            std::thread::sleep(delay);
            let _ = s.write_all(answer.as_bytes());
        });
        addr
    }

    fn probe(addr: SocketAddr, timeout: f64) -> i32 {
        let args = HealthcheckArgs {
            live: false,
            timeout,
            addr: Some(addr),
        };
        run(&args, 1)
    }

    #[test]
    fn ready_is_zero_and_anything_else_is_one() {
        let ok = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        assert_eq!(probe(answer_once(ok, Duration::ZERO), 2.0), 0);
        let missing = "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"missing\":[]}";
        assert_eq!(probe(answer_once(missing, Duration::ZERO), 2.0), 1);
        assert_eq!(probe(answer_once("SSH-2.0-x\r\n", Duration::ZERO), 2.0), 1);
        // Too slow.
        assert_eq!(probe(answer_once(ok, Duration::from_secs(2)), 0.3), 1);
        // Nothing listening.
        let closed = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        assert_eq!(probe(closed, 1.0), 1);
    }

    #[test]
    fn the_answer_is_read_with_its_reasons() {
        let addr = answer_once(
            "HTTP/1.1 503 Service Unavailable\r\n\r\n{\"missing\":[\"index\"]}",
            Duration::ZERO,
        );
        let (status, body) = get(addr, "/readyz", Duration::from_secs(2)).unwrap();
        assert_eq!((status, body.as_str()), (503, "{\"missing\":[\"index\"]}"));
    }

    #[test]
    fn a_wildcard_is_probed_on_loopback() {
        let v4: SocketAddr = "0.0.0.0:8082".parse().unwrap();
        assert_eq!(probe_addr(v4), "127.0.0.1:8082".parse().unwrap());
        let v6: SocketAddr = "[::]:8082".parse().unwrap();
        assert_eq!(probe_addr(v6), "[::1]:8082".parse().unwrap());
        let own: SocketAddr = "10.0.0.7:9000".parse().unwrap();
        assert_eq!(probe_addr(own), own);
    }
}
