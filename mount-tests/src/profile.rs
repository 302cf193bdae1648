//! The network profiles benchmarks run under, made by the test server's knobs (netem is not in
//! this kernel).

use std::time::Duration;

use crate::server::Knobs;

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Straight over loopback: no added latency, no cap.
    Loopback,
    /// Like S3 from a nearby instance: 10 ms before each response's first byte, 80 MB/s per
    /// connection each way (downloads and uploads).
    S3Like,
    /// A bucket in another region: 40 ms before the first byte, 25 MB/s per connection.
    Far,
}

impl Profile {
    pub fn apply(self, knobs: &Knobs) {
        match self {
            Profile::Loopback => {
                knobs.set_first_byte_delay(Duration::ZERO);
                knobs.set_bandwidth(None);
                knobs.set_upload_bandwidth(None);
            }
            Profile::S3Like => {
                knobs.set_first_byte_delay(Duration::from_millis(10));
                knobs.set_bandwidth(Some(80_000_000));
                knobs.set_upload_bandwidth(Some(80_000_000));
            }
            Profile::Far => {
                knobs.set_first_byte_delay(Duration::from_millis(40));
                knobs.set_bandwidth(Some(25_000_000));
                knobs.set_upload_bandwidth(Some(25_000_000));
            }
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Profile::Loopback => "loopback",
            Profile::S3Like => "s3-like",
            Profile::Far => "far",
        }
    }
}
