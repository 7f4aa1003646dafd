//! `docker save` archives flattened into a root filesystem, for the ns backend (which runs a
//! directory, not layers).
//!
//! The archive is indexed in one streaming pass over its headers (where each member's data
//! lies, never a layer in memory); each layer is then read in place, seeked to, in the order of
//! `manifest.json`. Both layouts are read: the classic one (`<id>/layer.tar`, a duplicate layer
//! a symlink to the first) and the OCI one docker >= 25 writes (`blobs/sha256/<hex>`). Layers
//! may be plain tar or zstd; gzip, xz and bzip2 layers are refused with what to do.
//!
//! Layers are applied with OCI whiteout semantics, in two passes per layer: first its deletions
//! (`.wh.NAME` removes NAME of the layers below, `.wh..wh..opq` empties its directory of them),
//! then its additions, so a layer's own entries survive its opaque marker. Whiteout files never
//! appear in the result.
//!
//! Hostile archives: a member path that is absolute or has `..` is refused, naming the member.
//! Parent directories are resolved inside `dest` the way docker resolves them (a symlink met on
//! the way is followed as if `dest` were `/`, `..` stops at `dest`), so a layer that plants
//! `a -> /` and then writes `a/etc/x` writes `dest/etc/x`; every component is checked with
//! `lstat`, and nothing is created or removed through a symlink. (tar's `unpack_in` would refuse
//! that write instead, but it resolves symlinks on the host, so it also refuses ordinary images
//! where a later layer writes under `var/run -> /run`.) Hard links must name an existing
//! non-directory inside `dest`. Modes, owners, symlinks and mtimes are kept, like a rootfs tar
//! import; device nodes and fifos are skipped (the ns backend mounts its own `/dev`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs::{DirBuilder, File};
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use warren_core::{Error, Result};

/// The largest `manifest.json` read (a real one is a few hundred bytes per image).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// The most members the outer archive may have (a real one has a few per layer).
const MAX_MEMBERS: usize = 100_000;
/// The most symlinks followed resolving one path (Linux's own limit).
const MAX_SYMLINKS: usize = 40;

/// An indexed `docker save` archive.
#[derive(Debug)]
pub struct DockerSave {
    archive: PathBuf,
    members: HashMap<String, Member>,
    images: Vec<ManifestImage>,
}

/// One image of `manifest.json`.
#[derive(Debug, Deserialize)]
struct ManifestImage {
    #[serde(rename = "RepoTags", default)]
    repo_tags: Option<Vec<String>>,
    #[serde(rename = "Layers", default)]
    layers: Vec<String>,
}

#[derive(Clone, Debug)]
enum Member {
    /// A regular file: its data lies at `pos`, `size` bytes.
    File { pos: u64, size: u64 },
    /// A symlink or hard link to another member (normalized path).
    Link(String),
}

/// What [`flatten_docker_save`] unpacked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlattenedImage {
    /// The image's own tags (`RepoTags`; empty for an untagged image).
    pub tags: Vec<String>,
    /// How many layers were applied.
    pub layers: usize,
}

/// Flattens the image of the `docker save` archive `archive` into the directory `dest` (created
/// if missing). `want_tag` picks the image whose tags include it; without it, or when no image
/// has it, the archive must hold a single image.
pub fn flatten_docker_save(archive: &Path, dest: &Path, want_tag: Option<&str>) -> Result<FlattenedImage> {
    DockerSave::open(archive)?.flatten(dest, want_tag)
}

impl DockerSave {
    /// Indexes `archive`: one pass over its headers, reading only `manifest.json`.
    pub fn open(archive: &Path) -> Result<Self> {
        let shown = archive.display();
        let f = File::open(archive).map_err(|e| Error::io(format!("opening {shown}"), e))?;
        let mut ar = tar::Archive::new(f);
        let mut members = HashMap::new();
        let mut manifest = None;
        let entries = ar.entries_with_seek().map_err(|e| Error::io(format!("reading the tar {shown}"), e))?;
        for ent in entries {
            let mut ent = ent.map_err(|e| Error::io(format!("reading the tar {shown}"), e))?;
            if members.len() >= MAX_MEMBERS {
                return Err(bad(
                    archive,
                    format!("has more than {MAX_MEMBERS} members: it is not a docker save archive"),
                ));
            }
            let raw = ent.path().map_err(|e| Error::io(format!("reading a member name in {shown}"), e))?;
            // A name with `..` above the top is never one a manifest can name.
            let Some(name) = normalize(Path::new(""), &raw) else { continue };
            let ty = ent.header().entry_type();
            if ty.is_file() || ty.is_contiguous() {
                if name == "manifest.json" {
                    if ent.size() > MAX_MANIFEST_BYTES {
                        return Err(bad(
                            archive,
                            format!("manifest.json is {} bytes, more than the {MAX_MANIFEST_BYTES} a docker save archive needs", ent.size()),
                        ));
                    }
                    let mut buf = Vec::new();
                    (&mut ent)
                        .take(MAX_MANIFEST_BYTES)
                        .read_to_end(&mut buf)
                        .map_err(|e| Error::io(format!("reading manifest.json in {shown}"), e))?;
                    manifest = Some(buf);
                }
                members.insert(name, Member::File { pos: ent.raw_file_position(), size: ent.size() });
            } else if ty.is_symlink() || ty.is_hard_link() {
                let target = ent
                    .link_name()
                    .map_err(|e| Error::io(format!("reading the link of {name} in {shown}"), e))?
                    .ok_or_else(|| bad(archive, format!("member {name} is a link without a target")))?;
                // A symlink is relative to its own directory; a hard link names a member.
                let base =
                    if ty.is_symlink() { Path::new(&name).parent().unwrap_or(Path::new("")) } else { Path::new("") };
                if let Some(t) = normalize(base, &target) {
                    members.insert(name, Member::Link(t));
                }
            }
        }
        let manifest =
            manifest.ok_or_else(|| bad(archive, "has no manifest.json: it is not a docker save archive".into()))?;
        let images: Vec<ManifestImage> = serde_json::from_slice(&manifest)
            .map_err(|e| bad(archive, format!("manifest.json is not a docker save manifest: {e}")))?;
        if images.is_empty() {
            return Err(bad(archive, "manifest.json lists no image".into()));
        }
        Ok(Self { archive: archive.to_path_buf(), members, images })
    }

    /// The tags of each image in the archive, in manifest order.
    pub fn images(&self) -> Vec<Vec<String>> {
        self.images.iter().map(|i| i.repo_tags.clone().unwrap_or_default()).collect()
    }

    /// The image `want_tag` names or, when no image has that tag, the only one.
    fn select(&self, want_tag: Option<&str>) -> Result<&ManifestImage> {
        let tags = |i: &ManifestImage| i.repo_tags.clone().unwrap_or_default();
        if let Some(w) = want_tag {
            if let Some(i) = self.images.iter().find(|i| tags(i).iter().any(|t| t == w)) {
                return Ok(i);
            }
        }
        match self.images.as_slice() {
            [only] => Ok(only),
            many => {
                let listed: Vec<String> = many
                    .iter()
                    .map(|i| match tags(i).as_slice() {
                        [] => "(untagged)".to_owned(),
                        t => t.join(", "),
                    })
                    .collect();
                let asked = want_tag.map(|w| format!(", none tagged {w}")).unwrap_or_default();
                Err(bad(
                    &self.archive,
                    format!("holds {} images{asked}: [{}]; choose one by its tag", many.len(), listed.join("; ")),
                ))
            }
        }
    }

    /// The data span of member `name`, links followed.
    fn span(&self, name: &str) -> Result<(u64, u64)> {
        let mut at = name.trim_start_matches("./").to_owned();
        for _ in 0..MAX_SYMLINKS {
            match self.members.get(&at) {
                Some(Member::File { pos, size }) => return Ok((*pos, *size)),
                Some(Member::Link(t)) => at = t.clone(),
                None => {
                    return Err(bad(
                        &self.archive,
                        format!("manifest.json names layer {name}, which the archive does not contain"),
                    ))
                }
            }
        }
        Err(bad(&self.archive, format!("layer {name}: too many links")))
    }

    /// Applies the layers of the chosen image (see [`flatten_docker_save`]) into `dest`.
    pub fn flatten(&self, dest: &Path, want_tag: Option<&str>) -> Result<FlattenedImage> {
        let image = self.select(want_tag)?;
        if image.layers.is_empty() {
            return Err(bad(&self.archive, "the image has no layers".into()));
        }
        // Every layer is found before anything is written.
        let spans = image.layers.iter().map(|l| self.span(l).map(|s| (l.as_str(), s))).collect::<Result<Vec<_>>>()?;
        DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dest)
            .map_err(|e| Error::io(format!("creating {}", dest.display()), e))?;
        for (layer, (pos, size)) in &spans {
            tracing::debug!(archive = %self.archive.display(), layer, size, "applying a layer");
            let cx = Cx { archive: &self.archive, layer, dest };
            cx.deletions(cx.open(*pos, *size)?)?;
            cx.additions(cx.open(*pos, *size)?)?;
        }
        Ok(FlattenedImage { tags: image.repo_tags.clone().unwrap_or_default(), layers: spans.len() })
    }
}

/// One layer being applied: what errors name.
struct Cx<'a> {
    archive: &'a Path,
    layer: &'a str,
    dest: &'a Path,
}

impl Cx<'_> {
    fn err(&self, member: &str, msg: impl std::fmt::Display) -> Error {
        Error::InvalidRequest(format!("{}: layer {}: {member}: {msg}", self.archive.display(), self.layer))
    }

    fn io(&self, what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error + '_ {
        let what = what.to_string();
        move |e| Error::io(format!("{}: layer {}: {what}", self.archive.display(), self.layer), e)
    }

    /// The layer's tar stream, decompressed.
    fn open(&self, pos: u64, size: u64) -> Result<tar::Archive<Box<dyn Read>>> {
        let mut f = File::open(self.archive).map_err(self.io("opening the archive"))?;
        f.seek(SeekFrom::Start(pos)).map_err(self.io("seeking to the layer"))?;
        let mut magic = Vec::with_capacity(6);
        (&mut f).take(size.min(6)).read_to_end(&mut magic).map_err(self.io("reading the layer"))?;
        f.seek(SeekFrom::Start(pos)).map_err(self.io("seeking to the layer"))?;
        let raw = f.take(size);
        let reader: Box<dyn Read> = match magic.as_slice() {
            [0x28, 0xb5, 0x2f, 0xfd, ..] => {
                Box::new(zstd::stream::read::Decoder::new(raw).map_err(self.io("starting the zstd decoder"))?)
            }
            [0x1f, 0x8b, ..] => return Err(self.unsupported("gzip")),
            [0xfd, b'7', b'z', b'X', b'Z', 0] => return Err(self.unsupported("xz")),
            [b'B', b'Z', b'h', ..] => return Err(self.unsupported("bzip2")),
            _ => Box::new(raw),
        };
        let mut ar = tar::Archive::new(reader);
        ar.set_preserve_permissions(true);
        ar.set_preserve_ownerships(true);
        ar.set_preserve_mtime(true);
        ar.set_unpack_xattrs(false);
        ar.set_overwrite(true);
        Ok(ar)
    }

    fn unsupported(&self, what: &str) -> Error {
        Error::Unsupported(format!(
            "{}: layer {} is {what}-compressed, which warren cannot read (it reads plain tar and zstd layers); \
             `docker load` it and `docker save` it again (docker writes plain layers), or import a root filesystem",
            self.archive.display(),
            self.layer
        ))
    }

    /// Pass 1: the layer's whiteouts remove what the layers below put there.
    fn deletions(&self, mut ar: tar::Archive<Box<dyn Read>>) -> Result<()> {
        for ent in ar.entries().map_err(self.io("reading the layer"))? {
            let ent = ent.map_err(self.io("reading the layer"))?;
            let Some(rel) = self.member_path(&ent)? else { continue };
            let Some((name, parent)) = rel.split_last() else { continue };
            let shown = lossy(&rel);
            match whiteout(name) {
                Whiteout::No | Whiteout::Ignored => {}
                Whiteout::Opaque => {
                    let Some(dir) = resolve_dir(self.dest, parent, false).map_err(self.io(&shown))? else { continue };
                    let list =
                        std::fs::read_dir(&dir).map_err(self.io(format!("{shown}: listing {}", dir.display())))?;
                    for child in list {
                        let child = child.map_err(self.io(format!("{shown}: listing {}", dir.display())))?;
                        remove(&child.path())
                            .map_err(self.io(format!("{shown}: removing {}", child.path().display())))?;
                    }
                }
                Whiteout::Remove(victim) => {
                    let Some(dir) = resolve_dir(self.dest, parent, false).map_err(self.io(&shown))? else { continue };
                    let path = dir.join(victim);
                    remove(&path).map_err(self.io(format!("{shown}: removing {}", path.display())))?;
                }
            }
        }
        Ok(())
    }

    /// Pass 2: the layer's files, directories and links, whiteouts skipped. Directory modes and
    /// owners are set last, deepest first, so a read-only directory can still be filled.
    fn additions(&self, mut ar: tar::Archive<Box<dyn Read>>) -> Result<()> {
        let mut dirs = Vec::new();
        for ent in ar.entries().map_err(self.io("reading the layer"))? {
            let mut ent = ent.map_err(self.io("reading the layer"))?;
            let Some(rel) = self.member_path(&ent)? else { continue };
            let Some((name, parent)) = rel.split_last() else { continue };
            if whiteout(name) != Whiteout::No {
                continue;
            }
            let shown = lossy(&rel);
            let ty = ent.header().entry_type();
            if ty.is_character_special() || ty.is_block_special() || ty.is_fifo() {
                tracing::debug!(member = %shown, "skipping a device node or fifo");
                continue;
            }
            let dir = resolve_dir(self.dest, parent, true)
                .map_err(self.io(format!("{shown}: creating its parent directory")))?
                .ok_or_else(|| self.err(&shown, "its parent directory cannot be created"))?;
            let target = dir.join(name);
            let existing = match std::fs::symlink_metadata(&target) {
                Ok(md) => Some(md),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(self.io(&shown)(e)),
            };
            let is_dir = ty.is_dir() || (ent.header().as_ustar().is_none() && ent.path_bytes().ends_with(b"/"));
            if is_dir {
                match existing {
                    Some(md) if md.is_dir() => {}
                    other => {
                        if other.is_some() {
                            std::fs::remove_file(&target).map_err(self.io(format!("{shown}: replacing a file")))?;
                        }
                        DirBuilder::new()
                            .mode(0o755)
                            .create(&target)
                            .map_err(self.io(format!("{shown}: creating the directory")))?;
                    }
                }
                dirs.push((rel, ent));
                continue;
            }
            if let Some(md) = existing {
                remove_known(&target, &md)
                    .map_err(self.io(format!("{shown}: replacing what a lower layer put there")))?;
            }
            if ty.is_hard_link() {
                self.hard_link(&ent, &shown, &target)?;
            } else {
                ent.unpack(&target).map_err(self.io(format!("unpacking {shown}")))?;
            }
        }
        dirs.sort_by(|a, b| b.0.cmp(&a.0));
        for (rel, mut ent) in dirs {
            let Some((name, parent)) = rel.split_last() else { continue };
            let shown = lossy(&rel);
            let Some(dir) = resolve_dir(self.dest, parent, false).map_err(self.io(&shown))? else { continue };
            let target = dir.join(name);
            if std::fs::symlink_metadata(&target).is_ok_and(|md| md.is_dir()) {
                ent.unpack(&target).map_err(self.io(format!("setting the mode and owner of {shown}")))?;
            }
        }
        Ok(())
    }

    /// A hard link: its target must be an existing non-directory inside `dest`.
    fn hard_link(&self, ent: &tar::Entry<'_, Box<dyn Read>>, shown: &str, target: &Path) -> Result<()> {
        let link = ent
            .link_name()
            .map_err(self.io(format!("{shown}: reading the link target")))?
            .ok_or_else(|| self.err(shown, "a hard link without a target"))?;
        let mut parts = Vec::new();
        for c in link.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_owned()),
                Component::CurDir | Component::RootDir => {}
                _ => return Err(self.err(shown, format!("hard link to {} leaves the image", link.display()))),
            }
        }
        let Some((lname, lparent)) = parts.split_last() else {
            return Err(self.err(shown, "a hard link to the image's root"));
        };
        let missing = || self.err(shown, format!("hard link to {}, which no layer so far has", link.display()));
        let ldir = resolve_dir(self.dest, lparent, false).map_err(self.io(shown))?.ok_or_else(missing)?;
        let src = ldir.join(lname);
        match std::fs::symlink_metadata(&src) {
            Ok(md) if md.is_dir() => Err(self.err(shown, format!("hard link to the directory {}", link.display()))),
            Ok(_) => {
                std::fs::hard_link(&src, target).map_err(self.io(format!("{shown}: linking to {}", link.display())))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(missing()),
            Err(e) => Err(self.io(shown)(e)),
        }
    }

    /// The member's path as components under the root; `None` for entries that carry no file
    /// (pax and GNU long-name headers). Absolute paths and `..` are refused.
    fn member_path(&self, ent: &tar::Entry<'_, Box<dyn Read>>) -> Result<Option<Vec<OsString>>> {
        let ty = ent.header().entry_type();
        if ty.is_pax_global_extensions() || ty.is_pax_local_extensions() || ty.is_gnu_longname() || ty.is_gnu_longlink()
        {
            return Ok(None);
        }
        let path = ent.path().map_err(self.io("reading a member name"))?;
        let mut parts = Vec::new();
        for c in path.components() {
            match c {
                Component::Normal(p) => parts.push(p.to_owned()),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => {
                    return Err(self.err(&path.display().to_string(), "an absolute path in a layer (refused)"))
                }
                Component::ParentDir => {
                    return Err(self.err(&path.display().to_string(), "a path with `..` in a layer (refused)"))
                }
            }
        }
        Ok(Some(parts))
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Whiteout<'a> {
    No,
    /// `.wh..wh..opq`: the directory hides what the layers below put in it.
    Opaque,
    /// `.wh.NAME`: NAME is removed.
    Remove(&'a OsStr),
    /// Other `.wh..wh.` names (aufs bookkeeping): neither applied nor unpacked.
    Ignored,
}

fn whiteout(name: &OsStr) -> Whiteout<'_> {
    let b = name.as_bytes();
    if b == b".wh..wh..opq" {
        Whiteout::Opaque
    } else if b.starts_with(b".wh..wh.") || b == b".wh." {
        Whiteout::Ignored
    } else if let Some(rest) = b.strip_prefix(b".wh.") {
        Whiteout::Remove(OsStr::from_bytes(rest))
    } else {
        Whiteout::No
    }
}

/// The real directory under `root` that `parts` names, symlinks on the way followed inside
/// `root` (an absolute target starts again at `root`, `..` stops there). Missing directories
/// are created (mode 0755) when `create`, else the answer is `None`; so is a non-directory on
/// the way without `create` (with it, that is an error). Every component is `lstat`ed.
fn resolve_dir(root: &Path, parts: &[OsString], create: bool) -> std::io::Result<Option<PathBuf>> {
    enum Step {
        Root,
        Up,
        Name(OsString),
    }
    let mut todo: Vec<Step> = parts.iter().rev().map(|p| Step::Name(p.clone())).collect();
    let mut cur = root.to_path_buf();
    let mut depth = 0usize;
    let mut links = 0usize;
    while let Some(step) = todo.pop() {
        match step {
            Step::Root => {
                cur = root.to_path_buf();
                depth = 0;
            }
            Step::Up => {
                if depth > 0 {
                    cur.pop();
                    depth -= 1;
                }
            }
            Step::Name(name) => {
                let next = cur.join(&name);
                match std::fs::symlink_metadata(&next) {
                    Ok(md) if md.is_dir() => {
                        cur = next;
                        depth += 1;
                    }
                    Ok(md) if md.file_type().is_symlink() => {
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(std::io::Error::other(format!("too many symlinks resolving {}", lossy(parts))));
                        }
                        let target = std::fs::read_link(&next)?;
                        for c in target.components().rev() {
                            match c {
                                Component::Normal(p) => todo.push(Step::Name(p.to_owned())),
                                Component::ParentDir => todo.push(Step::Up),
                                Component::RootDir | Component::Prefix(_) => todo.push(Step::Root),
                                Component::CurDir => {}
                            }
                        }
                    }
                    Ok(_) if create => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::NotADirectory,
                            format!("{} is not a directory", next.display()),
                        ))
                    }
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                        DirBuilder::new().mode(0o755).create(&next)?;
                        cur = next;
                        depth += 1;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(Some(cur))
}

/// Removes `path` (a directory with its contents, anything else itself; never through a
/// symlink); a missing one is fine.
fn remove(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(md) => remove_known(path, &md),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn remove_known(path: &Path, md: &std::fs::Metadata) -> std::io::Result<()> {
    if md.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    }
}

/// `path` under `base` as a `/`-joined member name; `None` when it climbs above the top.
fn normalize(base: &Path, path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for c in base.components().chain(path.components()) {
        match c {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::RootDir | Component::Prefix(_) => parts.clear(),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir => {}
        }
    }
    Some(parts.join("/"))
}

fn lossy(parts: &[OsString]) -> String {
    parts.iter().map(|p| p.to_string_lossy()).collect::<Vec<_>>().join("/")
}

fn bad(archive: &Path, msg: String) -> Error {
    Error::InvalidRequest(format!("{}: {msg}", archive.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whiteout_names() {
        assert_eq!(whiteout(OsStr::new(".wh..wh..opq")), Whiteout::Opaque);
        assert_eq!(whiteout(OsStr::new(".wh.gone")), Whiteout::Remove(OsStr::new("gone")));
        assert_eq!(whiteout(OsStr::new(".wh..wh.plnk")), Whiteout::Ignored);
        assert_eq!(whiteout(OsStr::new(".wh.")), Whiteout::Ignored);
        assert_eq!(whiteout(OsStr::new("file.wh.x")), Whiteout::No);
    }

    #[test]
    fn member_names_normalize_and_links_resolve_against_their_directory() {
        assert_eq!(normalize(Path::new(""), Path::new("./abc/layer.tar")).as_deref(), Some("abc/layer.tar"));
        assert_eq!(normalize(Path::new("b"), Path::new("../a/layer.tar")).as_deref(), Some("a/layer.tar"));
        assert_eq!(normalize(Path::new(""), Path::new("../x")), None);
    }

    #[test]
    fn directories_resolve_inside_the_root() {
        let t = tempfile::tempdir().expect("tempdir");
        let root = t.path().join("root");
        std::fs::create_dir_all(root.join("usr/lib")).expect("mkdir");
        std::os::unix::fs::symlink("/", root.join("up")).expect("symlink");
        std::os::unix::fs::symlink("../../../..", root.join("usr/climb")).expect("symlink");
        std::os::unix::fs::symlink("usr/lib", root.join("lib")).expect("symlink");
        let p = |s: &str| s.split('/').map(OsString::from).collect::<Vec<_>>();
        assert_eq!(resolve_dir(&root, &p("up/usr/lib"), false).expect("resolve"), Some(root.join("usr/lib")));
        assert_eq!(resolve_dir(&root, &p("usr/climb/lib"), false).expect("resolve"), Some(root.join("usr/lib")));
        assert_eq!(resolve_dir(&root, &p("nope"), false).expect("resolve"), None);
        assert_eq!(resolve_dir(&root, &p("up/new/dir"), true).expect("resolve"), Some(root.join("new/dir")));
        assert!(root.join("new/dir").is_dir());
        std::os::unix::fs::symlink("loop", root.join("loop")).expect("symlink");
        assert!(resolve_dir(&root, &p("loop/x"), true).is_err(), "a symlink loop ends");
    }
}
