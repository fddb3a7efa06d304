//! `sluice health`: one GET of the agent's `/health` (or `/ready`) over plain HTTP/1.1, with
//! `std::net` only, for a container `HEALTHCHECK` or an exec probe in an image that has no
//! shell and no curl.
//!
//! The whole exchange (connect, request, answer) must finish within one deadline, so a
//! listener that accepts and never answers fails the probe in time instead of hanging it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// The most bytes of an answer that are read: the status line, the headers and the start of
/// the body are all a probe looks at.
const MAX_ANSWER: usize = 64 * 1024;

/// Where a probe goes: `host:port` and the path to GET.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// `host:port` as given (a name, an IPv4 address, or a bracketed IPv6 address).
    pub authority: String,
    /// The path with its query, starting with `/`.
    pub path: String,
}

impl Target {
    /// A target from an `http://host:port/path` URL (`https` is refused: the agent serves
    /// plain HTTP only; the port defaults to 80 and the path to `/`).
    pub fn from_url(url: &str) -> Result<Target, String> {
        let rest = url
            .strip_prefix("http://")
            .ok_or_else(|| format!("`{url}`: only http:// URLs can be probed"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() {
            return Err(format!("`{url}`: no host"));
        }
        let has_port = match authority.rfind(']') {
            Some(close) => authority[close..].contains(':'),
            None => authority.contains(':'),
        };
        let authority = if has_port {
            authority.to_owned()
        } else {
            format!("{authority}:80")
        };
        Ok(Target {
            authority: local_for_wildcard(&authority),
            path: path.to_owned(),
        })
    }

    /// A target from the agent's `http` setting (`host:port`) and a path. A wildcard listen
    /// address (`0.0.0.0`, `[::]`) is probed on the matching loopback address.
    pub fn from_addr(addr: &str, path: &str) -> Target {
        Target {
            authority: local_for_wildcard(addr),
            path: path.to_owned(),
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}{}", self.authority, self.path)
    }
}

/// `0.0.0.0:P` → `127.0.0.1:P` and `[::]:P` → `[::1]:P`: the agent listens on every address,
/// and the probe runs beside it.
fn local_for_wildcard(authority: &str) -> String {
    if let Some(port) = authority.strip_prefix("0.0.0.0:") {
        format!("127.0.0.1:{port}")
    } else if let Some(port) = authority.strip_prefix("[::]:") {
        format!("[::1]:{port}")
    } else {
        authority.to_owned()
    }
}

/// The answer to a probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status code (200, 503, ...).
    pub status: u16,
    /// The status line after the code (`OK`, `Service Unavailable`).
    pub reason: String,
    /// The first line of the body (`ok`, `degraded`, a JSON reason), trimmed, at most 300
    /// characters.
    pub first_line: String,
}

/// Why a probe got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// The host name does not resolve.
    #[error("cannot resolve `{0}`: {1}")]
    Resolve(String, io::Error),
    /// Nothing accepted the connection.
    #[error("cannot connect to {0}: {1}")]
    Connect(SocketAddr, io::Error),
    /// Connected, but no complete answer came within the deadline.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed while sending or reading.
    #[error("connection failed: {0}")]
    Io(io::Error),
    /// Something answered that is not HTTP.
    #[error("not an HTTP answer: {0:?}")]
    NotHttp(String),
}

/// GETs `target` and returns its status, all within `timeout`.
pub fn probe(target: &Target, timeout: Duration) -> Result<Answer, ProbeError> {
    let deadline = Instant::now() + timeout;
    let remaining = || {
        deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or(ProbeError::Timeout(timeout))
    };
    let addrs: Vec<SocketAddr> = target
        .authority
        .to_socket_addrs()
        .map_err(|e| ProbeError::Resolve(target.authority.clone(), e))?
        .collect();
    let mut stream = None;
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, remaining()?) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) if is_timeout(&e) => return Err(ProbeError::Timeout(timeout)),
            Err(e) => last = Some(ProbeError::Connect(addr, e)),
        }
    }
    let mut stream = match stream {
        Some(s) => s,
        None => {
            return Err(last.unwrap_or_else(|| {
                ProbeError::Resolve(
                    target.authority.clone(),
                    io::Error::new(io::ErrorKind::NotFound, "no address"),
                )
            }));
        }
    };
    let io_err = |e: io::Error| {
        if is_timeout(&e) {
            ProbeError::Timeout(timeout)
        } else {
            ProbeError::Io(e)
        }
    };
    stream
        .set_write_timeout(Some(remaining()?))
        .map_err(io_err)?;
    let request = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: sluice-health\r\nConnection: close\r\n\r\n",
        target.path, target.authority
    );
    stream.write_all(request.as_bytes()).map_err(io_err)?;
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    while buf.len() < MAX_ANSWER && !complete(&buf) {
        stream
            .set_read_timeout(Some(remaining()?))
            .map_err(io_err)?;
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(e)),
        }
    }
    parse(&buf)
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

/// True once `buf` holds the headers and, if they give a `Content-Length`, the whole body.
fn complete(buf: &[u8]) -> bool {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let length = head.lines().skip(1).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())?
    });
    match length {
        Some(n) => buf.len() >= end + 4 + n,
        None => false, // read to the end of the connection
    }
}

/// The status and first body line of an HTTP/1.x answer.
fn parse(buf: &[u8]) -> Result<Answer, ProbeError> {
    let text = String::from_utf8_lossy(buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or("");
    let not_http = || {
        let shown: String = status_line.chars().take(80).collect();
        ProbeError::NotHttp(shown)
    };
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(not_http());
    }
    let status = parts
        .next()
        .and_then(|c| c.parse::<u16>().ok())
        .ok_or_else(not_http)?;
    let reason = parts.next().unwrap_or("").trim().to_owned();
    let first_line = body
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    Ok(Answer {
        status,
        reason,
        first_line,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_addresses() {
        let t = Target::from_url("http://127.0.0.1:9100/ready").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9100");
        assert_eq!(t.path, "/ready");
        assert_eq!(t.to_string(), "http://127.0.0.1:9100/ready");
        let t = Target::from_url("http://localhost").unwrap();
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("localhost:80", "/")
        );
        let t = Target::from_url("http://[::1]/health").unwrap();
        assert_eq!(t.authority, "[::1]:80");
        let t = Target::from_url("http://0.0.0.0:9100/health").unwrap();
        assert_eq!(t.authority, "127.0.0.1:9100");
        assert!(Target::from_url("https://x:1/").is_err());
        assert!(Target::from_url("http:///health").is_err());
        assert_eq!(
            Target::from_addr("[::]:9100", "/health").to_string(),
            "http://[::1]:9100/health"
        );
    }

    #[test]
    fn answers_are_parsed() {
        let a =
            parse(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\ndegraded\nsink k1: x\n").unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.reason, "OK");
        assert_eq!(a.first_line, "degraded");
        let a = parse(b"HTTP/1.0 503 Service Unavailable\r\n\r\n{\"ready\":false}").unwrap();
        assert_eq!((a.status, a.reason.as_str()), (503, "Service Unavailable"));
        assert_eq!(a.first_line, "{\"ready\":false}");
        assert!(matches!(
            parse(b"SSH-2.0-OpenSSH\r\n"),
            Err(ProbeError::NotHttp(_))
        ));
        assert!(matches!(parse(b""), Err(ProbeError::NotHttp(_))));
    }

    #[test]
    fn an_answer_is_complete_with_its_content_length() {
        assert!(!complete(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok"));
        assert!(complete(
            b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nok\n"
        ));
        assert!(!complete(b"HTTP/1.1 200 OK\r\n\r\nok\n"), "read to EOF");
        assert!(!complete(b"HTTP/1.1 200 OK\r\n"));
    }
}
