//! The daemon's own counters, scraped from its Prometheus endpoint on a free local port.

use std::io::{Read, Write};
use std::net::TcpStream;

pub struct MetricsPort {
    port: u16,
}

impl MetricsPort {
    /// A port free now, for `--metrics-addr`.
    pub fn free() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        Self { port: listener.local_addr().expect("its address").port() }
    }

    /// The `--metrics-addr` value.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The value of the metric line starting with `name ` (a full name, labels included), or 0
    /// when the daemon does not report it.
    pub fn value(&self, name: &str) -> u64 {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else { return 0 };
        let mut text = String::new();
        let sent = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        if sent.is_err() || stream.read_to_string(&mut text).is_err() {
            return 0;
        }
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }
}
