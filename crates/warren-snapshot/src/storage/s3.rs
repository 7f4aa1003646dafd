//! S3-compatible storage through the `object_store` crate.
//!
//! Archives are streamed straight into a multipart upload (no temporary file): the writer
//! fills parts of [`S3Config::part_size`] bytes and keeps at most
//! [`S3Config::upload_concurrency`] of them in flight, so memory stays at about
//! `part_size x (concurrency + 1)`. An upload that is never completed (a crash, `kill -9`) is
//! invisible: S3 lists no object for it. Configure the bucket's lifecycle rule
//! `AbortIncompleteMultipartUpload` to reclaim the space of such parts.
//!
//! `object_store` is async; this type owns a small tokio runtime (2 threads) and blocks on it,
//! so its methods must not be called from inside an async task (use `spawn_blocking`).

use std::future::Future;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};

use super::{check_key, ObjectInfo, ObjectWriter, Storage};
use crate::error::{Result, SnapshotError};

/// Where and how to reach an S3-compatible store. Credentials come from the environment
/// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, and every other
/// `AWS_*` variable `object_store` knows) unless given here; fields set here win.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// A key prefix inside the bucket (`""` for none, or like `warren/prod`).
    pub prefix: String,
    /// The endpoint URL for non-AWS stores (`http://127.0.0.1:9000`); `None` for AWS.
    pub endpoint: Option<String>,
    /// The region (default: `AWS_DEFAULT_REGION` / `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// Allow plain `http://` endpoints (local test servers).
    pub allow_http: bool,
    /// Access key id (default: `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (default: `AWS_SECRET_ACCESS_KEY`). Never serialised or printed.
    #[serde(skip_serializing)]
    pub secret_access_key: Option<String>,
    /// Multipart part size in bytes (at least 5 MiB; default 16 MiB, so up to 160 GB).
    pub part_size: usize,
    /// Parts uploaded at once (default 4).
    pub upload_concurrency: usize,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            prefix: String::new(),
            endpoint: None,
            region: None,
            allow_http: false,
            access_key_id: None,
            secret_access_key: None,
            part_size: 16 << 20,
            upload_concurrency: 4,
        }
    }
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("allow_http", &self.allow_http)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key.as_ref().map(|_| "<redacted>"))
            .field("part_size", &self.part_size)
            .field("upload_concurrency", &self.upload_concurrency)
            .finish()
    }
}

/// The runtime `object_store` runs on; shut down in the background when dropped, so dropping
/// the storage inside async code does not panic.
#[derive(Debug)]
struct Rt(Option<tokio::runtime::Runtime>);

impl Rt {
    fn run<T>(&self, f: impl Future<Output = T>) -> Result<T> {
        let rt = self.0.as_ref().ok_or_else(|| SnapshotError::internal("S3 runtime already shut down"))?;
        Ok(rt.block_on(f))
    }

    fn enter(&self) -> Option<tokio::runtime::EnterGuard<'_>> {
        self.0.as_ref().map(|rt| rt.enter())
    }
}

impl Drop for Rt {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Snapshots in an S3-compatible bucket.
#[derive(Debug, Clone)]
pub struct S3Storage {
    store: Arc<AmazonS3>,
    rt: Arc<Rt>,
    cfg: S3Config,
}

fn s3_err(what: String, e: object_store::Error) -> SnapshotError {
    match e {
        object_store::Error::NotFound { .. } => SnapshotError::Core(warren_core::Error::NotFound(what)),
        e => SnapshotError::io(format!("S3: {what}"), io::Error::other(e.to_string())),
    }
}

impl S3Storage {
    /// Connects (lazily: nothing is sent until the first call).
    pub fn new(cfg: S3Config) -> Result<Self> {
        if cfg.bucket.is_empty() {
            return Err(SnapshotError::Core(warren_core::Error::InvalidRequest(
                "S3 storage needs a bucket name".into(),
            )));
        }
        let mut b = AmazonS3Builder::from_env().with_bucket_name(&cfg.bucket);
        if let Some(e) = &cfg.endpoint {
            b = b.with_endpoint(e);
        }
        let region = cfg.region.clone().or_else(|| std::env::var("AWS_REGION").ok());
        if let Some(r) = region {
            b = b.with_region(r);
        }
        if cfg.allow_http {
            b = b.with_allow_http(true);
        }
        if let Some(k) = &cfg.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &cfg.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        let store = b.build().map_err(|e| {
            SnapshotError::Core(warren_core::Error::InvalidRequest(format!("S3 storage configuration: {e}")))
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("warren-s3")
            .enable_all()
            .build()
            .map_err(|e| SnapshotError::io("starting the S3 client runtime", e))?;
        let mut cfg = cfg;
        cfg.part_size = cfg.part_size.max(5 << 20);
        cfg.upload_concurrency = cfg.upload_concurrency.max(1);
        cfg.prefix = cfg.prefix.trim_matches('/').to_owned();
        Ok(Self { store: Arc::new(store), rt: Arc::new(Rt(Some(rt))), cfg })
    }

    /// The configuration in use.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    fn path(&self, key: &str) -> Result<ObjectPath> {
        check_key(key)?;
        let full = if self.cfg.prefix.is_empty() { key.to_owned() } else { format!("{}/{key}", self.cfg.prefix) };
        ObjectPath::parse(full.trim_end_matches('/')).map_err(|e| {
            SnapshotError::Core(warren_core::Error::InvalidRequest(format!("invalid S3 key {key:?}: {e}")))
        })
    }

    fn key_of(&self, p: &ObjectPath) -> String {
        let s = p.as_ref();
        if self.cfg.prefix.is_empty() {
            s.to_owned()
        } else {
            s.strip_prefix(&format!("{}/", self.cfg.prefix)).unwrap_or(s).to_owned()
        }
    }
}

struct S3Writer {
    rt: Arc<Rt>,
    upload: Option<WriteMultipart>,
    since_check: usize,
    part_size: usize,
    concurrency: usize,
    key: String,
    written: u64,
}

impl std::fmt::Debug for S3Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Writer").field("key", &self.key).finish_non_exhaustive()
    }
}

impl Write for S3Writer {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(up) = self.upload.as_mut() else { return Err(io::Error::other("S3 upload already finished")) };
        if self.since_check + buf.len() >= self.part_size {
            // A part is about to start: wait until fewer than `concurrency` are in flight.
            let r = self.rt.run(up.wait_for_capacity(self.concurrency)).map_err(|e| io::Error::other(e.to_string()))?;
            r.map_err(|e| io::Error::other(format!("S3 upload of {}: {e}", self.key)))?;
            self.since_check = 0;
        }
        let _guard = self.rt.enter();
        up.write(buf);
        self.since_check += buf.len();
        self.written += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl ObjectWriter for S3Writer {
    fn finish(mut self: Box<Self>) -> Result<u64> {
        let up = self.upload.take().ok_or_else(|| SnapshotError::internal("S3 upload already finished"))?;
        self.rt.run(up.finish())?.map_err(|e| s3_err(format!("completing the upload of {}", self.key), e))?;
        Ok(self.written)
    }

    fn abort(mut self: Box<Self>) {
        self.discard();
    }
}

impl S3Writer {
    fn discard(&mut self) {
        if let Some(up) = self.upload.take() {
            if let Ok(Err(e)) = self.rt.run(up.abort()) {
                tracing::warn!(key = %self.key, error = %e, "could not abort an S3 multipart upload");
            }
        }
    }
}

impl Drop for S3Writer {
    fn drop(&mut self) {
        self.discard();
    }
}

struct S3Reader {
    rt: Arc<Rt>,
    stream: BoxStream<'static, object_store::Result<Bytes>>,
    cur: Bytes,
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            let next = self.rt.run(self.stream.next()).map_err(|e| io::Error::other(e.to_string()))?;
            match next {
                None => return Ok(0),
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(io::Error::other(format!("S3 download: {e}"))),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl Storage for S3Storage {
    fn describe(&self) -> String {
        let ep = self.cfg.endpoint.as_deref().map(|e| format!(" at {e}")).unwrap_or_default();
        format!("s3://{}/{}{ep}", self.cfg.bucket, self.cfg.prefix)
    }

    fn writer(&self, key: &str) -> Result<Box<dyn ObjectWriter>> {
        let path = self.path(key)?;
        let upload = self
            .rt
            .run(self.store.put_multipart(&path))?
            .map_err(|e| s3_err(format!("starting the upload of {key}"), e))?;
        Ok(Box::new(S3Writer {
            rt: Arc::clone(&self.rt),
            upload: Some(WriteMultipart::new_with_chunk_size(upload, self.cfg.part_size)),
            since_check: 0,
            part_size: self.cfg.part_size,
            concurrency: self.cfg.upload_concurrency,
            key: key.to_owned(),
            written: 0,
        }))
    }

    fn reader(&self, key: &str) -> Result<Box<dyn Read + Send>> {
        let path = self.path(key)?;
        let got = self.rt.run(self.store.get(&path))?.map_err(|e| s3_err(format!("stored object {key}"), e))?;
        Ok(Box::new(S3Reader { rt: Arc::clone(&self.rt), stream: got.into_stream(), cur: Bytes::new() }))
    }

    fn put(&self, key: &str, data: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let payload = PutPayload::from(data.to_vec());
        self.rt.run(self.store.put(&path, payload))?.map_err(|e| s3_err(format!("writing {key}"), e))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        let r = self.rt.run(async {
            let got = self.store.get(&path).await?;
            got.bytes().await
        })?;
        match r {
            Ok(b) => Ok(Some(b.to_vec())),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(s3_err(format!("reading {key}"), e)),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        check_key(prefix)?;
        let dir = match prefix.rfind('/') {
            Some(i) => &prefix[..i],
            None => "",
        };
        let base = if dir.is_empty() { None } else { Some(self.path(dir)?) };
        let base = match (&base, self.cfg.prefix.is_empty()) {
            (Some(p), _) => Some(p.clone()),
            (None, false) => Some(ObjectPath::from(self.cfg.prefix.as_str())),
            (None, true) => None,
        };
        let metas = self
            .rt
            .run(self.store.list(base.as_ref()).try_collect::<Vec<_>>())?
            .map_err(|e| s3_err(format!("listing {prefix}"), e))?;
        let mut out: Vec<ObjectInfo> = metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: self.key_of(&m.location),
                size: m.size,
                modified: UNIX_EPOCH
                    + Duration::from_millis(u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0)),
            })
            .filter(|o| o.key.starts_with(prefix))
            .collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        match self.rt.run(self.store.delete(&path))? {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(s3_err(format!("deleting {key}"), e)),
        }
    }
}
