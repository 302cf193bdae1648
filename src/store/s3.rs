//! `ObjectStore` over aws-sdk-s3: the only module that speaks the SDK. HTTP statuses and S3 error
//! codes become `StoreError` categories here, in one place.

use std::ops::Range;
use std::time::{Duration, SystemTime};

use aws_config::environment::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::ProfileFileRegionProvider;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_s3::config::{
    BehaviorVersion, Region, RequestChecksumCalculation, retry::RetryConfig, timeout::TimeoutConfig,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, EncodingType, RequestPayer};
use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use prometheus_client::metrics::counter::Counter;

use bytes::Bytes;
use md5::Digest;

use super::{BodyStream, ListPage, ObjectMeta, ObjectStore, Replace, StoreError, UploadId, UploadedPart};
use crate::object_id::{ETag, LONGEST_KEY};

/// How to reach the bucket; built from the checked mount configuration.
#[derive(Clone, Debug, Default)]
pub struct S3Settings {
    pub bucket: String,
    pub region: Option<String>,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    pub profile: Option<String>,
    pub no_sign_request: bool,
    pub requester_pays: bool,
    /// Extra certificate authorities (PEM) trusted for HTTPS, beside the system's.
    pub ca_bundle_pem: Option<Vec<u8>>,
    /// Attempts of one request, retries included (0 counts as 1).
    pub max_attempts: u32,
}

/// A GET anyone holding it may send until it expires: the URL and the headers it was signed with.
#[derive(Clone, Debug)]
pub struct PresignedGet {
    pub url: String,
    pub headers: Vec<(String, String)>,
}

pub struct S3Store {
    client: Client,
    bucket: String,
    requester_pays: bool,
    /// Whether PUT bodies are hashed into the request's signature. A store whose objects carry
    /// their own check (the shared cache's sealed blocks) skips that second pass over each byte.
    sign_payloads: bool,
}

impl S3Store {
    /// Loads credentials and region through aws-config's default chain (environment, profile,
    /// web identity, instance metadata), with our overrides.
    pub async fn connect(settings: &S3Settings, retries: Counter) -> Result<Self, StoreError> {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        // Region: the flag, else the environment or profile, else us-east-1. A bucket elsewhere
        // answers with its region, which the startup check reports by name.
        let region = RegionProviderChain::first_try(settings.region.clone().map(Region::new))
            .or_else(EnvironmentVariableRegionProvider::new())
            .or_else(
                ProfileFileRegionProvider::builder()
                    .profile_name(settings.profile.as_deref().unwrap_or("default"))
                    .build(),
            )
            .or_else(Region::new("us-east-1"));
        loader = loader.region(region);
        if let Some(url) = &settings.endpoint_url {
            loader = loader.endpoint_url(url);
        }
        if let Some(pem) = &settings.ca_bundle_pem {
            loader = loader.http_client(https_client_trusting(pem)?);
        }
        if settings.no_sign_request {
            loader = loader.no_credentials();
        }
        let shared = loader.load().await;
        let builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(settings.force_path_style)
            // The one retry policy: the SDK's standard mode (exponential backoff with jitter) for
            // throttling, 5xx, timeouts and connection errors. A body cut off mid-stream is resumed
            // by the fetch layer instead.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(settings.max_attempts.max(1))
                    .with_initial_backoff(Duration::from_millis(100))
                    .with_max_backoff(Duration::from_secs(5)),
            )
            // A connection must open within 5 s, and a response start within 15 s of the request.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .read_timeout(Duration::from_secs(15))
                    .build(),
            )
            .interceptor(RetryCounter(retries));
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: settings.bucket.clone(),
            requester_pays: settings.requester_pays,
            sign_payloads: true,
        })
    }

    /// The same store, its PUT bodies sent as `UNSIGNED-PAYLOAD` and without a checksum: for
    /// objects that carry a check of their own, verified whenever they are read.
    pub fn without_payload_checks(self) -> Self {
        let config =
            self.client.config().to_builder().request_checksum_calculation(RequestChecksumCalculation::WhenRequired);
        Self { client: Client::from_conf(config.build()), sign_payloads: false, ..self }
    }

    /// A presigned GET of `key`, valid for a few minutes, for a probe that speaks HTTP itself.
    pub async fn presign_get(&self, key: &str) -> Result<PresignedGet, StoreError> {
        use aws_sdk_s3::presigning::PresigningConfig;
        let config = PresigningConfig::expires_in(Duration::from_secs(600))
            .map_err(|e| StoreError::Other(format!("presigning: {e}")))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .presigned(config)
            .await
            .map_err(classify)?;
        let headers = request.headers().map(|(n, v)| (n.to_owned(), v.to_owned())).collect();
        Ok(PresignedGet { url: request.uri().to_owned(), headers })
    }

    fn payer(&self) -> Option<RequestPayer> {
        self.requester_pays.then_some(RequestPayer::Requester)
    }
}

/// Counts the attempts after the first of each request: the SDK's retries.
#[derive(Debug)]
struct RetryCounter(Counter);

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "RetryCounter"
    }

    fn read_before_attempt(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if cfg.load::<RequestAttempts>().is_some_and(|a| a.attempts() > 1) {
            self.0.inc();
        }
        Ok(())
    }
}

/// The SDK's own HTTPS client (rustls), trusting the system roots and the given PEM bundle.
fn https_client_trusting(pem: &[u8]) -> Result<aws_sdk_s3::config::SharedHttpClient, StoreError> {
    use aws_smithy_http_client::tls::{Provider, TlsContext, TrustStore, rustls_provider::CryptoMode};
    let trust = TrustStore::empty().with_native_roots(true).with_pem_certificate(pem.to_vec());
    let context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| StoreError::Other(format!("loading the CA bundle: {e}")))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::AwsLc))
        .tls_context(context)
        .build_https())
}

fn to_system_time(t: Option<aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// A name from a listing with `encoding-type=url` (`+` is a space, as S3 writes it); `None` when
/// it does not decode to UTF-8, and so cannot be a key fetchfs can name.
fn url_decode(encoded: &str) -> Option<String> {
    let plus_as_space = encoded.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space).decode_utf8().ok().map(|s| s.into_owned())
}

/// The one place where SDK failures become store error categories.
fn classify<E>(err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let raw = service.raw();
        let status = raw.status().as_u16();
        let code = service.err().code().unwrap_or("");
        let message = service.err().message().unwrap_or("").to_owned();
        match (status, code) {
            (_, "NoSuchBucket") => return StoreError::NoSuchBucket,
            (404, _) | (_, "NoSuchKey") => return StoreError::NotFound,
            (412, _) => return StoreError::PreconditionFailed,
            (301, _) | (_, "PermanentRedirect") | (_, "AuthorizationHeaderMalformed") => {
                if let Some(region) = raw.headers().get("x-amz-bucket-region") {
                    return StoreError::WrongRegion(region.to_owned());
                }
            }
            (_, "InvalidObjectState") => {
                return StoreError::AccessDenied(format!(
                    "the object is archived (Glacier or Deep Archive storage class) and must be restored first: {message}"
                ));
            }
            (400, _) if message.contains("Server Side Encryption") || message.contains("customer") => {
                return StoreError::AccessDenied(format!(
                    "the object is encrypted with a customer-provided key (SSE-C), which fetchfs cannot supply: {message}"
                ));
            }
            (403, _) => {
                let what = if code.is_empty() { "403 Forbidden".to_owned() } else { format!("{code}: {message}") };
                return StoreError::AccessDenied(what);
            }
            _ => {}
        }
    }
    match err {
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => StoreError::Unreachable(error_chain(&err)),
        other => StoreError::Other(DisplayErrorContext(&other).to_string()),
    }
}

/// An error and its causes on one line, innermost last ("dispatch failure: ...: Connection refused").
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

impl ObjectStore for S3Store {
    async fn list_page(
        &self,
        prefix: &str,
        token: Option<String>,
        max_keys: Option<i32>,
    ) -> Result<ListPage, StoreError> {
        if prefix.len() > LONGEST_KEY {
            // No key is that long, and a request that long may not be a URI the client can build.
            return Ok(ListPage::default());
        }
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .delimiter("/")
            // Keys may hold characters XML cannot carry (NUL, other control characters): ask for
            // them percent-encoded, and decode only if the server says it did so.
            .encoding_type(EncodingType::Url)
            .set_continuation_token(token)
            .set_max_keys(max_keys)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        let encoded = out.encoding_type() == Some(&EncodingType::Url);
        let name = |raw: &str| if encoded { url_decode(raw) } else { Some(raw.to_owned()) };
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: name(o.key.as_deref()?)?,
                    size: o.size.unwrap_or(0).max(0) as u64,
                    etag: ETag::new(o.e_tag.clone().unwrap_or_default()),
                    last_modified: to_system_time(o.last_modified),
                })
            })
            .collect();
        let prefixes = out.common_prefixes().iter().filter_map(|p| name(p.prefix.as_deref()?)).collect();
        let next = if out.is_truncated == Some(true) { out.next_continuation_token } else { None };
        Ok(ListPage { objects, prefixes, next })
    }

    async fn head(&self, key: &str) -> Result<ObjectMeta, StoreError> {
        if key.len() > LONGEST_KEY {
            return Err(StoreError::NotFound);
        }
        let out = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: out.content_length.unwrap_or(0).max(0) as u64,
            etag: ETag::new(out.e_tag.unwrap_or_default()),
            last_modified: to_system_time(out.last_modified),
        })
    }

    async fn get_range(&self, key: &str, range: Range<u64>, etag: &ETag) -> Result<BodyStream, StoreError> {
        if range.is_empty() {
            return Ok(Box::pin(futures::stream::empty()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .range(format!("bytes={}-{}", range.start, range.end - 1))
            .if_match(etag.as_str())
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        // A server or proxy that ignores Range or If-Match would hand over the wrong bytes, or
        // another version's: what came back is checked, not trusted.
        if let Err(e) = check_ranged_response(&range, etag, out.content_range(), out.e_tag()) {
            let (content_range, response_etag) = (out.content_range(), out.e_tag());
            tracing::warn!(key, pinned = %etag, ?response_etag, ?content_range, "refusing a GET response: {e}");
            return Err(e);
        }
        let key = key.to_owned();
        let chunks = futures::stream::try_unfold(Some(out.body), move |body| {
            let key = key.clone();
            async move {
                let Some(mut body) = body else { return Ok(None) };
                match body.try_next().await {
                    Ok(Some(chunk)) => Ok(Some((chunk, Some(body)))),
                    Ok(None) => Ok(None),
                    Err(e) => Err(StoreError::Other(format!("the body of {key} was cut off: {e}"))),
                }
            }
        });
        Ok(Box::pin(chunks))
    }

    async fn put_object(&self, key: &str, body: Bytes, replace: Replace) -> Result<ETag, StoreError> {
        let request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(body))
            .set_if_none_match(if_none_match(&replace))
            .set_if_match(if_match(&replace))
            .set_request_payer(self.payer());
        let sent = if self.sign_payloads {
            request.send().await
        } else {
            request.customize().disable_payload_signing().send().await
        };
        let out = sent.map_err(classify)?;
        Ok(ETag::new(out.e_tag.unwrap_or_default()))
    }

    async fn create_upload(&self, key: &str) -> Result<UploadId, StoreError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        out.upload_id.map(UploadId).ok_or_else(|| StoreError::Other("the server gave no upload id".into()))
    }

    async fn get_whole(&self, key: &str, longest: u64) -> Result<Bytes, StoreError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        // Dropping the response unread closes its connection instead of draining the body.
        match out.content_length {
            Some(length) if u64::try_from(length).unwrap_or(u64::MAX) <= longest => {}
            Some(length) => return Err(StoreError::TooLong(u64::try_from(length).unwrap_or(u64::MAX))),
            None => return Err(StoreError::Other(format!("{key}: the response announced no length"))),
        }
        let body =
            out.body.collect().await.map_err(|e| StoreError::Other(format!("the body of {key} was cut off: {e}")))?;
        Ok(body.into_bytes())
    }

    async fn upload_part(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        body: Bytes,
    ) -> Result<UploadedPart, StoreError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(number as i32)
            .body(ByteStream::from(body))
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        let etag = out.e_tag.ok_or_else(|| StoreError::Other(format!("the server gave part {number} no ETag")))?;
        Ok(UploadedPart { number, etag })
    }

    async fn upload_part_copy(
        &self,
        key: &str,
        upload: &UploadId,
        number: u32,
        from: &str,
        etag: &ETag,
        range: Range<u64>,
    ) -> Result<UploadedPart, StoreError> {
        let out = self
            .client
            .upload_part_copy()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .part_number(number as i32)
            .copy_source(self.copy_source(from))
            .copy_source_if_match(etag.as_str())
            .copy_source_range(format!("bytes={}-{}", range.start, range.end.saturating_sub(1)))
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        let etag = out.copy_part_result.and_then(|r| r.e_tag);
        let etag = etag.ok_or_else(|| StoreError::Other(format!("the server gave copied part {number} no ETag")))?;
        Ok(UploadedPart { number, etag })
    }

    async fn complete_upload(
        &self,
        key: &str,
        upload: &UploadId,
        parts: Vec<UploadedPart>,
        replace: Replace,
    ) -> Result<ETag, StoreError> {
        let expected = multipart_etag(&parts);
        let parts = parts
            .into_iter()
            .map(|p| CompletedPart::builder().part_number(p.number as i32).e_tag(p.etag).build())
            .collect();
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .set_if_none_match(if_none_match(&replace))
            .set_if_match(if_match(&replace))
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify);
        match completed {
            Ok(out) => Ok(ETag::new(out.e_tag.unwrap_or_default())),
            // A retry of a completion whose first attempt went through (its answer was late: the
            // server assembles a large object before answering) finds the object there, or the
            // upload gone. The object is ours if it has the ETag these parts make.
            Err(e @ (StoreError::PreconditionFailed | StoreError::NotFound)) => match &expected {
                Some(expected) => self.completed_meanwhile(key, expected).await.ok_or(e),
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn abort_upload(&self, key: &str, upload: &UploadId) -> Result<(), StoreError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(&upload.0)
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn copy_object(&self, from: &str, etag: &ETag, to: &str) -> Result<ETag, StoreError> {
        let out = self
            .client
            .copy_object()
            .bucket(&self.bucket)
            .key(to)
            .copy_source(self.copy_source(from))
            .copy_source_if_match(etag.as_str())
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        let etag = out.copy_object_result.and_then(|r| r.e_tag).unwrap_or_default();
        Ok(ETag::new(etag))
    }

    async fn delete_object(&self, key: &str, only: Option<&ETag>) -> Result<(), StoreError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .set_if_match(only.map(|etag| etag.as_str().to_owned()))
            .set_request_payer(self.payer())
            .send()
            .await
            .map_err(classify)?;
        Ok(())
    }
}

impl S3Store {
    /// A copy's source: `bucket/key`, URL-encoded (a key may hold any character).
    fn copy_source(&self, key: &str) -> String {
        format!("{}/{}", self.bucket, percent_encoding::utf8_percent_encode(key, COPY_SOURCE))
    }
}

/// What a copy source's key escapes: everything but unreserved characters and `/`.
const COPY_SOURCE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~').remove(b'/');

/// The ETag S3 gives the object these parts make (the MD5 of their MD5s, and their count), when
/// the parts' ETags are MD5s.
fn multipart_etag(parts: &[UploadedPart]) -> Option<String> {
    let mut md5s = Vec::with_capacity(parts.len() * 16);
    for part in parts {
        let hex = part.etag.trim_matches('"');
        if hex.len() != 32 {
            return None;
        }
        for pair in hex.as_bytes().chunks(2) {
            md5s.push(u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok()?);
        }
    }
    let digest = md5::Md5::digest(&md5s);
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    Some(format!("\"{hex}-{}\"", parts.len()))
}

impl S3Store {
    /// The ETag of the object at `key` if it is `expected`, asked a few times: the completion
    /// that made it may still be finishing on the server.
    async fn completed_meanwhile(&self, key: &str, expected: &str) -> Option<ETag> {
        for _ in 0..10 {
            if let Ok(meta) = self.head(key).await
                && meta.etag.matches(expected)
            {
                tracing::info!(%key, "a retried completion found the object its first attempt made");
                return Some(meta.etag);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        None
    }
}

/// `If-None-Match: *` for a write that must not replace an object.
fn if_none_match(replace: &Replace) -> Option<String> {
    (*replace == Replace::Never).then(|| "*".to_owned())
}

/// `If-Match` for a write that may replace only the version this mount wrote.
fn if_match(replace: &Replace) -> Option<String> {
    match replace {
        Replace::IfMatch(etag) => Some(etag.as_str().to_owned()),
        Replace::Never | Replace::Allowed => None,
    }
}

/// Checks that a response to a GET of `range`, pinned to `etag`, is that range (as S3 clips it at
/// the object's end) of that version. A changed ETag is `PreconditionFailed` (the object changed);
/// anything else that does not match is an error of the server's.
fn check_ranged_response(
    range: &Range<u64>,
    etag: &ETag,
    content_range: Option<&str>,
    response_etag: Option<&str>,
) -> Result<(), StoreError> {
    match response_etag {
        Some(got) if etag.matches(got) => {}
        Some(_) => return Err(StoreError::PreconditionFailed),
        None => return Err(StoreError::Other(format!("the response has no ETag (pinned to {etag})"))),
    }
    let asked = format!("bytes {}-{}", range.start, range.end - 1);
    let Some(content_range) = content_range else {
        return Err(StoreError::Other(format!(
            "the response has no Content-Range (asked for {asked}): the server ignored Range"
        )));
    };
    let parsed = content_range.strip_prefix("bytes ").and_then(|rest| {
        let (span, total) = rest.split_once('/')?;
        let (first, last) = span.split_once('-')?;
        Some((first.parse::<u64>().ok()?, last.parse::<u64>().ok()?, total.parse::<u64>().ok()))
    });
    match parsed {
        Some((first, last, total))
            if first == range.start && last < range.end && (last + 1 == range.end || total == Some(last + 1)) =>
        {
            Ok(())
        }
        _ => Err(StoreError::Other(format!("the response is for {content_range:?}, not {asked}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::{ETag, StoreError, check_ranged_response, url_decode};

    #[test]
    fn a_ranged_response_must_be_the_range_asked_for_of_the_pinned_version() {
        let etag = ETag::new("\"v1\"");
        let check = |range: std::ops::Range<u64>, content_range: Option<&str>, got: Option<&str>| {
            check_ranged_response(&range, &etag, content_range, got)
        };
        assert_eq!(check(0..100, Some("bytes 0-99/1000"), Some("\"v1\"")), Ok(()));
        assert_eq!(check(900..1100, Some("bytes 900-999/1000"), Some("v1")), Ok(()), "clipped at the end");
        assert_eq!(check(0..100, Some("bytes 0-99/1000"), Some("\"v2\"")), Err(StoreError::PreconditionFailed));
        assert!(matches!(check(0..100, None, Some("\"v1\"")), Err(StoreError::Other(_))), "Range ignored");
        assert!(matches!(check(100..200, Some("bytes 0-99/1000"), Some("\"v1\"")), Err(StoreError::Other(_))));
        assert!(matches!(check(0..100, Some("bytes 0-49/1000"), Some("\"v1\"")), Err(StoreError::Other(_))), "short");
        assert!(matches!(check(0..100, Some("bytes 0-49/*"), Some("\"v1\"")), Err(StoreError::Other(_))));
        assert!(matches!(check(0..100, Some("bytes 0-99/1000"), None), Err(StoreError::Other(_))));
        assert!(matches!(check(0..100, Some("garbage"), Some("v1")), Err(StoreError::Other(_))));
    }

    #[test]
    fn url_encoded_listing_names_decode() {
        assert_eq!(url_decode("dir/a%00b").as_deref(), Some("dir/a\0b"));
        assert_eq!(url_decode("my+file%20two").as_deref(), Some("my file two"));
        assert_eq!(url_decode("plus%2Bsign/percent%2525").as_deref(), Some("plus+sign/percent%25"));
        assert_eq!(url_decode("%FF"), None);
    }
}
