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

    /// The value of the metric line starting with `name ` (a full name, labels included); 0 when
    /// its family is reported but not that line yet (a label set not seen). Panics when the
    /// endpoint does not answer or does not know the family: a dead daemon or a misspelt name must
    /// not pass for "nothing happened".
    pub fn value(&self, name: &str) -> u64 {
        let text = self.scrape();
        let family = name.split('{').next().unwrap_or(name);
        let family = family.strip_suffix("_total").unwrap_or(family);
        assert!(
            text.lines().any(|l| l.strip_prefix("# TYPE ").is_some_and(|t| t.split(' ').next() == Some(family))),
            "the daemon reports no metric {family}"
        );
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    }

    fn scrape(&self) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port))
            .unwrap_or_else(|e| panic!("the metrics endpoint on port {} does not answer: {e}", self.port));
        let mut text = String::new();
        stream
            .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .and_then(|()| stream.read_to_string(&mut text))
            .unwrap_or_else(|e| panic!("scraping the metrics endpoint: {e}"));
        text
    }
}
