//! A small HTTP/1.1 probe of our own, for what the SDK does not expose: how long resolving and the
//! TCP connect take, and one stream read over a socket whose receive buffer we choose. It speaks
//! plain HTTP only, through a presigned URL; over HTTPS the SDK's own timings stand instead.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::store::s3::PresignedGet;

#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct StreamRun {
    pub connect_ms: f64,
    pub first_byte_ms: f64,
    pub bytes: u64,
    pub mb_per_s: f64,
}

struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn target(url: &str) -> std::io::Result<(Target, Duration)> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, why);
    let uri: http::Uri = url.parse().map_err(|e| invalid(format!("{url}: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "the probe speaks plain HTTP only"));
    }
    let host = uri.host().ok_or_else(|| invalid(format!("{url} has no host")))?;
    let port = uri.port_u16().unwrap_or(80);
    let resolving = Instant::now();
    let addr = (host, port).to_socket_addrs()?.next().ok_or_else(|| invalid(format!("{host} has no address")))?;
    let resolve = resolving.elapsed();
    let host = uri.authority().map_or(host.to_owned(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/".to_owned(), |p| p.to_string());
    Ok((Target { addr, host, path }, resolve))
}

/// Time to resolve the URL's host, and the median of `samples` TCP connects to it.
pub fn connect_times(url: &str, samples: usize) -> std::io::Result<(Duration, Duration)> {
    let (target, resolve) = target(url)?;
    let mut connects = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let started = Instant::now();
        drop(TcpStream::connect_timeout(&target.addr, Duration::from_secs(10))?);
        connects.push(started.elapsed());
    }
    connects.sort();
    Ok((resolve, connects[connects.len() / 2]))
}

/// One GET of `range_end` bytes from the start, over one new connection with the socket receive
/// buffer set to `rcvbuf` (the kernel's autotuning when `None`), read for at most `limit`.
pub fn stream(
    request: &PresignedGet,
    range_end: u64,
    rcvbuf: Option<usize>,
    limit: Duration,
) -> std::io::Result<StreamRun> {
    let (target, _) = target(&request.url)?;
    let socket = socket2::Socket::new(socket2::Domain::for_address(target.addr), socket2::Type::STREAM, None)?;
    if let Some(size) = rcvbuf {
        // Before connecting, so the window scale offered in the handshake allows the buffer.
        socket.set_recv_buffer_size(size)?;
    }
    socket.set_tcp_nodelay(true)?;
    let started = Instant::now();
    socket.connect_timeout(&target.addr.into(), Duration::from_secs(10))?;
    let connected = started.elapsed();
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nRange: bytes=0-{}\r\nConnection: close\r\n",
        target.path,
        target.host,
        range_end.max(1) - 1
    );
    for (name, value) in request.headers.iter().filter(|(n, _)| !n.eq_ignore_ascii_case("host")) {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let asked = Instant::now();
    stream.write_all(head.as_bytes())?;
    let mut buf = vec![0u8; 1 << 20];
    let mut headers = Vec::new();
    let mut in_body = false;
    let mut first_byte = None;
    let mut bytes = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first_byte.get_or_insert_with(|| asked.elapsed());
        if in_body {
            bytes += n as u64;
        } else {
            headers.extend_from_slice(&buf[..n]);
            if let Some(end) = headers.windows(4).position(|w| w == b"\r\n\r\n") {
                check_status(&headers)?;
                bytes += (headers.len() - end - 4) as u64;
                in_body = true;
            } else if headers.len() > 64 * 1024 {
                return Err(std::io::Error::other("the probe's response headers never ended"));
            }
        }
        if started.elapsed() >= limit {
            break;
        }
    }
    let elapsed = asked.elapsed().as_secs_f64().max(1e-9);
    Ok(StreamRun {
        connect_ms: connected.as_secs_f64() * 1e3,
        first_byte_ms: first_byte.unwrap_or_default().as_secs_f64() * 1e3,
        bytes,
        mb_per_s: bytes as f64 / 1e6 / elapsed,
    })
}

fn check_status(head: &[u8]) -> std::io::Result<()> {
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    match line.split_whitespace().nth(1) {
        Some("200" | "206") => Ok(()),
        _ => Err(std::io::Error::other(format!("the probe's GET was answered {line:?}"))),
    }
}
