//! An aws-sdk-s3 client for the tests and tools, pointed at a local endpoint with path-style
//! addressing, plus upload helpers.

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials as SdkCredentials, Region, retry::RetryConfig};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use bytes::Bytes;
use fetchfs::store::s3::{S3Settings, S3Store};
use std::sync::Arc;

use crate::server::Credentials;

/// How the client treats failed requests: tests of fault injection must see the first failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retries {
    Standard,
    Disabled,
}

pub fn s3_client(endpoint: &str, credentials: &Credentials, retries: Retries) -> Client {
    let retry = match retries {
        Retries::Standard => RetryConfig::standard(),
        Retries::Disabled => RetryConfig::disabled(),
    };
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(SdkCredentials::new(
            &credentials.access_key,
            &credentials.secret_key,
            None,
            None,
            "fetchfs-tests",
        ))
        .force_path_style(true)
        .retry_config(retry)
        .build();
    Client::from_conf(config)
}

/// Uploads `data` as one PutObject, or as a multipart upload of `part_size` parts when larger.
pub async fn upload(
    client: &Client,
    bucket: &str,
    key: &str,
    data: Bytes,
    part_size: usize,
) -> Result<String, aws_sdk_s3::Error> {
    if data.len() <= part_size {
        let out = client.put_object().bucket(bucket).key(key).body(ByteStream::from(data)).send().await?;
        return Ok(out.e_tag.unwrap_or_default());
    }
    let created = client.create_multipart_upload().bucket(bucket).key(key).send().await?;
    let upload_id = created.upload_id.unwrap_or_default();
    let mut parts = Vec::new();
    for (i, chunk) in data.chunks(part_size).enumerate() {
        let number = i as i32 + 1;
        let out = client
            .upload_part()
            .bucket(bucket)
            .key(key)
            .upload_id(&upload_id)
            .part_number(number)
            .body(ByteStream::from(data.slice_ref(chunk)))
            .send()
            .await?;
        parts.push(CompletedPart::builder().part_number(number).set_e_tag(out.e_tag).build());
    }
    let out = client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(key)
        .upload_id(&upload_id)
        .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
        .send()
        .await?;
    Ok(out.e_tag.unwrap_or_default())
}

/// fetchfs's own S3 store reading `bucket` at `endpoint` with `credentials`, which it takes from
/// the environment as fetchfs does.
pub async fn fetchfs_store(endpoint: &str, credentials: &Credentials, bucket: &str) -> Result<Arc<S3Store>, String> {
    // SAFETY: every caller sets the same values (the test server's keys), and nothing else in these
    // programs writes the environment, so a concurrent reader sees one of equal values.
    unsafe {
        std::env::set_var("AWS_ACCESS_KEY_ID", &credentials.access_key);
        std::env::set_var("AWS_SECRET_ACCESS_KEY", &credentials.secret_key);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let settings = S3Settings {
        bucket: bucket.into(),
        region: Some("us-east-1".into()),
        endpoint_url: Some(endpoint.into()),
        force_path_style: true,
        max_attempts: 3,
        ..Default::default()
    };
    S3Store::connect(&settings, Default::default()).await.map(Arc::new).map_err(|e| e.to_string())
}
