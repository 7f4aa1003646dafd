//! Images without a registry: import a root filesystem (a tar of it, or a directory) or a
//! `docker save` archive into the daemon, streamed (never the whole image in memory).
//!
//! * rootfs tar / directory: `POST /images/create?fromSrc=-` (docker's `import`), tagged as asked.
//! * `docker save` tar (it has a top-level `manifest.json`): `POST /images/load`; the tags are
//!   the archive's own. For the ns backend, which runs a directory, [`crate::save`] flattens the
//!   archive's layers (whiteouts applied) into one root filesystem.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use bollard::query_parameters::{CreateImageOptionsBuilder, ImportImageOptionsBuilder};
use bollard::Docker;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use warren_core::{Error, Result};

use crate::api_err;

/// What an import source is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory holding a root filesystem.
    Directory,
    /// A tar of a root filesystem.
    RootfsTar,
    /// A `docker save` archive.
    DockerSave,
}

/// Looks at `source`: a directory, a `docker save` tar (top-level `manifest.json`), or a rootfs tar.
pub fn detect(source: &Path) -> Result<SourceKind> {
    let md = std::fs::metadata(source).map_err(|e| Error::io(format!("reading {}", source.display()), e))?;
    if md.is_dir() {
        return Ok(SourceKind::Directory);
    }
    let f = std::fs::File::open(source).map_err(|e| Error::io(format!("opening {}", source.display()), e))?;
    let mut ar = tar::Archive::new(f);
    let entries = ar.entries().map_err(|e| Error::io(format!("reading the tar {}", source.display()), e))?;
    for ent in entries {
        let ent = ent.map_err(|e| Error::io(format!("reading the tar {}", source.display()), e))?;
        let path = ent.path().map_err(|e| Error::io(format!("reading the tar {}", source.display()), e))?;
        let p = path.to_string_lossy();
        if p.trim_start_matches("./") == "manifest.json" {
            return Ok(SourceKind::DockerSave);
        }
    }
    Ok(SourceKind::RootfsTar)
}

/// Imports `source` (directory, rootfs tar or `docker save` tar) and returns what was imported.
/// `tag` names the image for a rootfs (ignored for `docker save`, which carries its own tags).
pub async fn import(docker: &Docker, source: &Path, tag: &str) -> Result<SourceKind> {
    let src = source.to_path_buf();
    let kind = warren_core::backend::blocking(move || detect(&src)).await?;
    match kind {
        SourceKind::Directory => import_dir(docker, source, tag).await?,
        SourceKind::RootfsTar => import_rootfs(docker, file_stream(source.to_path_buf()), tag).await?,
        SourceKind::DockerSave => load(docker, file_stream(source.to_path_buf())).await?,
    }
    Ok(kind)
}

/// Imports the directory `dir` as the root filesystem of image `tag` (owners, modes and
/// symlinks kept; the tar is built on a blocking thread and streamed to the daemon).
pub async fn import_dir(docker: &Docker, dir: &Path, tag: &str) -> Result<()> {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    let dir = dir.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || {
        let w = ChannelWriter { tx: tx.clone(), buf: Vec::with_capacity(CHUNK) };
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        let r = b.append_dir_all(".", &dir).and_then(|()| b.into_inner()).and_then(|mut w| w.flush());
        if let Err(e) = &r {
            let _ = tx.blocking_send(Err(std::io::Error::new(e.kind(), format!("archiving {}: {e}", dir.display()))));
        }
        r
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let r = import_rootfs(docker, stream, tag).await;
    let w = writer.await.map_err(|e| Error::Internal(format!("the archiving task failed: {e}")))?;
    r?;
    w.map_err(|e| Error::io("archiving the image directory", e))
}

/// Imports a rootfs tar stream as image `tag`.
pub async fn import_rootfs(
    docker: &Docker,
    tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    tag: &str,
) -> Result<()> {
    let (repo, version) = split_tag(tag);
    let opts = CreateImageOptionsBuilder::default().from_src("-").repo(repo).tag(version).build();
    let mut progress = docker.create_image(Some(opts), Some(bollard::body_try_stream(tar)), None);
    while let Some(r) = progress.next().await {
        r.map_err(|e| api_err(&format!("importing image {tag}"), e))?;
    }
    Ok(())
}

/// Loads a `docker save` archive stream.
pub async fn load(docker: &Docker, tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Result<()> {
    let opts = ImportImageOptionsBuilder::default().quiet(true).build();
    let body = bollard::body_try_stream(tar);
    let mut progress = docker.import_image(opts, body, None);
    while let Some(r) = progress.next().await {
        r.map_err(|e| api_err("loading a docker-save archive", e))?;
    }
    Ok(())
}

/// Whether the daemon has image `tag`.
pub async fn exists(docker: &Docker, tag: &str) -> Result<bool> {
    match docker.inspect_image(tag).await {
        Ok(_) => Ok(true),
        Err(e) if crate::is_status(&e, 404) => Ok(false),
        Err(e) => Err(api_err(&format!("inspecting image {tag}"), e)),
    }
}

fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rfind(':') {
        Some(i) if !tag[i + 1..].contains('/') => (&tag[..i], &tag[i + 1..]),
        _ => (tag, "latest"),
    }
}

const CHUNK: usize = 256 << 10;

/// A file read in chunks on a blocking thread.
fn file_stream(path: PathBuf) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
    tokio::task::spawn_blocking(move || {
        let mut f = match std::fs::File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let _ = tx.blocking_send(Err(e));
                return;
            }
        };
        loop {
            let mut buf = vec![0u8; CHUNK];
            match f.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    buf.truncate(n);
                    if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the docker daemon stopped reading"))
    }
}

/// Builds a small root filesystem in `root` from this host's own programs, for hosts (and
/// tests) that cannot pull an image: busybox and its applets, Debian's `dash` as `/bin/sh`,
/// GNU `head`, and every program of `extra` (absolute host paths, copied to the same path), each
/// with the shared libraries `ldd` names. Import it with [`import_dir`].
pub fn minimal_rootfs(root: &Path, extra: &[&Path]) -> Result<()> {
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    for d in ["bin", "usr/bin", "etc", "tmp", "home", "proc", "dev", "sys", "root", "workspace"] {
        std::fs::create_dir_all(root.join(d)).map_err(io(format!("creating {}", root.join(d).display())))?;
    }
    let tmp = root.join("tmp");
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
        .map_err(io(format!("making {} mode 1777", tmp.display())))?;
    let busybox = which("busybox").ok_or_else(|| {
        Error::Unsupported("busybox is not installed on this host (Debian: apt-get install busybox-static)".into())
    })?;
    copy_with_libs(root, &busybox, "/bin/busybox")?;
    let list =
        std::process::Command::new(&busybox).arg("--list").output().map_err(io("running busybox --list".into()))?;
    for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
        let link = root.join("bin").join(applet);
        if applet != "busybox" && !link.exists() {
            std::os::unix::fs::symlink("busybox", &link).map_err(io(format!("linking {}", link.display())))?;
        }
    }
    let dash = which("dash").ok_or_else(|| Error::Unsupported("dash is not installed on this host".into()))?;
    copy_with_libs(root, &dash, "/bin/sh")?;
    let head = which("head").ok_or_else(|| Error::Unsupported("head is not installed on this host".into()))?;
    copy_with_libs(root, &head, "/usr/bin/head")?;
    for p in extra {
        let dst = p.to_str().ok_or_else(|| Error::InvalidRequest(format!("{} is not UTF-8", p.display())))?;
        copy_with_libs(root, p, dst)?;
    }
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")
        .map_err(io("writing etc/passwd".into()))?;
    std::fs::write(root.join("etc/group"), "root:x:0:\n").map_err(io("writing etc/group".into()))?;
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    ["/usr/local/bin", "/usr/bin", "/bin", "/usr/sbin", "/sbin"]
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.exists())
}

/// Copies `src` to `root/dst` and every shared library `ldd` lists for it to the same path under `root`.
fn copy_with_libs(root: &Path, src: &Path, dst: &str) -> Result<()> {
    let io = |what: String| move |e: std::io::Error| Error::io(what, e);
    let target = root.join(dst.trim_start_matches('/'));
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let _ = std::fs::remove_file(&target);
    std::fs::copy(src, &target).map_err(io(format!("copying {}", src.display())))?;
    let out = std::process::Command::new("ldd").arg(src).output().map_err(io("running ldd".into()))?;
    for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if !word.starts_with('/') {
            continue;
        }
        let lib = root.join(word.trim_start_matches('/'));
        if lib.exists() {
            continue;
        }
        if let Some(parent) = lib.parent() {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::copy(word, &lib).map_err(io(format!("copying {word}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::split_tag;

    #[test]
    fn tags_split_at_the_last_colon_outside_the_registry() {
        assert_eq!(split_tag("warren-test:busybox"), ("warren-test", "busybox"));
        assert_eq!(split_tag("plain"), ("plain", "latest"));
        assert_eq!(split_tag("reg:5000/img"), ("reg:5000/img", "latest"));
        assert_eq!(split_tag("reg:5000/img:v1"), ("reg:5000/img", "v1"));
    }
}
