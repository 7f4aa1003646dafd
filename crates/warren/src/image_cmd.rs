//! `warren image ...`: images for the docker and pool backends without a registry.

use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::Subcommand;
use warren_backend_docker::image::{self, SourceKind};
use warren_backend_docker::save::{self, DockerSave};
use warren_backend_docker::{DockerBackend, DockerOptions};

/// The `image` subcommands.
#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Import an image from a root filesystem (a directory or a tar of one) or a `docker save`
    /// archive: into the local docker daemon when one answers, and unpacked for the ns backend
    /// (a `docker save` archive's layers flattened into one root filesystem).
    #[command(after_help = "\
Examples:
  warren image import ./rootfs --tag warren-workspace:latest
  warren image import rootfs.tar --tag my-python:3.11
  warren image import saved.tar                 # the ns image is named by the archive's own tag
  warren image import saved.tar --tag my-app:1  # ... or by --tag (docker keeps the archive's tags)
  warren image minimal --tag warren-workspace:latest   # busybox + dash from this host

Workspaces use $CONTAINER_IMAGE (or $WARREN_CONTAINER_IMAGE), default warren-workspace:latest;
the image needs /bin/sh (and `mount` for the pool).")]
    Import {
        /// A directory, a rootfs tar or a `docker save` tar.
        source: PathBuf,
        /// The image's name. A root filesystem defaults to warren-workspace:latest; a `docker save`
        /// archive to its own single tag, and when it holds several images --tag also picks the
        /// one tagged so (docker loads them all under their own tags).
        #[arg(long)]
        tag: Option<String>,
    },
    /// Build a small image from this host's own programs (busybox, dash, head, and --with
    /// programs with their libraries) and import it: for hosts that cannot pull one.
    Minimal {
        /// The tag.
        #[arg(long, default_value = warren_backend_docker::DEFAULT_IMAGE)]
        tag: String,
        /// Another host program to copy in (absolute path; repeatable), like /usr/bin/python3.
        #[arg(long = "with", value_name = "PATH")]
        with: Vec<PathBuf>,
    },
}

/// Runs `cmd`: images go to the local docker daemon (when one answers) and, unpacked, to
/// `{state}/images/` for the ns backend.
pub async fn run(cmd: ImageCmd, state_dir: &Path) -> Result<i32> {
    match cmd {
        ImageCmd::Import { source, tag } => {
            if let Some(t) = &tag {
                warren_core::config::check_image_name(t)?;
            }
            let src = source.clone();
            let kind = tokio::task::spawn_blocking(move || image::detect(&src)).await.context("detecting")??;
            let tag = match (tag, kind) {
                (Some(t), _) => Ok(t),
                (None, SourceKind::DockerSave) => {
                    let src = source.clone();
                    let images = tokio::task::spawn_blocking(move || DockerSave::open(&src).map(|s| s.images()))
                        .await
                        .context("reading the archive")??;
                    archive_tag(&source, &images)
                }
                (None, _) => Ok(warren_backend_docker::DEFAULT_IMAGE.to_owned()),
            };
            let docker = DockerBackend::probe();
            let tag = match tag {
                Ok(tag) => Some(tag),
                // docker loads every image of the archive under its own tags: no name to choose.
                Err(why) if docker.is_ok() => {
                    println!("not imported for the ns backend: {why:#}");
                    None
                }
                Err(why) => return Err(why),
            };
            if let Some(tag) = &tag {
                warren_core::config::check_image_name(tag)
                    .with_context(|| format!("the tag of {} (name the image with --tag)", source.display()))?;
                let (src, state, t) = (source.clone(), state_dir.to_owned(), tag.clone());
                let dest = tokio::task::spawn_blocking(move || unpack_for_ns(&src, kind, &state, &t))
                    .await
                    .context("unpacking")?
                    .with_context(|| format!("importing {} for the ns backend", source.display()))?;
                println!("imported {} as {tag} for the ns backend ({})", source.display(), dest.display());
            }
            match docker {
                Ok(()) => {
                    let backend = DockerBackend::with_options(state_dir, DockerOptions::default())?;
                    let tag = tag.as_deref().unwrap_or(warren_backend_docker::DEFAULT_IMAGE);
                    image::import(backend.docker(), &source, tag)
                        .await
                        .with_context(|| format!("importing {} into docker", source.display()))?;
                    match kind {
                        SourceKind::DockerSave => {
                            println!("loaded the images of {} into docker (their own tags)", source.display())
                        }
                        _ => println!("imported {} as {tag} into docker", source.display()),
                    }
                }
                Err(why) => println!("no docker daemon answers ({why}): imported for the ns backend only"),
            }
        }
        ImageCmd::Minimal { tag, with } => {
            DockerBackend::probe().map_err(|why| anyhow::anyhow!("no docker daemon answers: {why}"))?;
            let backend = DockerBackend::with_options(state_dir, DockerOptions::default())?;
            let dir = tempfile::tempdir().context("creating a temporary directory")?;
            let root = dir.path().join("rootfs");
            let r = root.clone();
            tokio::task::spawn_blocking(move || {
                let extra: Vec<&std::path::Path> = with.iter().map(PathBuf::as_path).collect();
                image::minimal_rootfs(&r, &extra)
            })
            .await
            .context("building the root filesystem")??;
            image::import_dir(backend.docker(), &root, &tag).await?;
            println!("imported a minimal image from this host's programs as {tag}");
        }
    }
    Ok(0)
}

/// The name a `docker save` archive gives its ns image without `--tag`: its single tag.
fn archive_tag(source: &Path, images: &[Vec<String>]) -> Result<String> {
    match images {
        [tags] => match tags.as_slice() {
            [one] => Ok(one.clone()),
            [] => anyhow::bail!("{} holds an untagged image: name it with --tag NAME", source.display()),
            many => anyhow::bail!(
                "{} holds an image tagged {}: choose its name with --tag (one of those or another)",
                source.display(),
                many.join(", ")
            ),
        },
        many => {
            let tags: Vec<String> = many.iter().flatten().cloned().collect();
            anyhow::bail!(
                "{} holds {} images (tags: {}): pick one with --tag TAG",
                source.display(),
                many.len(),
                tags.join(", ")
            )
        }
    }
}

/// Unpacks a root filesystem (directory, tar, or the flattened layers of a `docker save`
/// archive, the image tagged `tag` or its only one) into `{state}/images/<tag>/rootfs`,
/// replacing an older one only once the new one is complete.
fn unpack_for_ns(source: &Path, kind: SourceKind, state: &Path, tag: &str) -> Result<PathBuf> {
    let dest = warren_core::config::image_rootfs(state, tag)?;
    let parent = dest.parent().context("the image directory has no parent")?;
    for d in [state.to_path_buf(), state.join("images"), parent.to_path_buf()] {
        DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&d)
            .with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = parent.join(".rootfs.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    DirBuilder::new().mode(0o755).create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let unpack = |reader: &mut dyn std::io::Read| -> Result<()> {
        let mut ar = tar::Archive::new(reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        ar.unpack(&tmp).with_context(|| format!("unpacking into {}", tmp.display()))
    };
    match kind {
        SourceKind::RootfsTar => {
            let mut f = std::fs::File::open(source).with_context(|| format!("opening {}", source.display()))?;
            unpack(&mut f)?;
        }
        SourceKind::Directory => {
            // The directory as a tar through a pipe: owners, modes and symlinks kept.
            let (mut rx, tx) = std::io::pipe().context("creating a pipe")?;
            let src = source.to_path_buf();
            let writer = std::thread::spawn(move || -> std::io::Result<()> {
                let mut b = tar::Builder::new(tx);
                b.follow_symlinks(false);
                b.append_dir_all(".", &src)?;
                b.finish()
            });
            let r = unpack(&mut rx);
            drop(rx);
            let w = writer.join().map_err(|_| anyhow::anyhow!("reading {} panicked", source.display()))?;
            r?;
            w.with_context(|| format!("reading {}", source.display()))?;
        }
        SourceKind::DockerSave => {
            let img = save::flatten_docker_save(source, &tmp, Some(tag));
            if img.is_err() {
                let _ = std::fs::remove_dir_all(&tmp);
            }
            let img = img?;
            tracing::debug!(layers = img.layers, tags = ?img.tags, "flattened a docker save archive");
        }
    }
    if !tmp.join("bin/sh").exists() && !tmp.join("usr/bin/sh").exists() {
        let _ = std::fs::remove_dir_all(&tmp);
        anyhow::bail!("{} has no /bin/sh: it is not a root filesystem a workspace can run", source.display());
    }
    let old = parent.join(".rootfs.old");
    let _ = std::fs::remove_dir_all(&old);
    if dest.exists() {
        std::fs::rename(&dest, &old).with_context(|| format!("moving the old {} aside", dest.display()))?;
    }
    std::fs::rename(&tmp, &dest).with_context(|| format!("moving {} into place", dest.display()))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(dest)
}
