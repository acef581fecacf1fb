//! Repository content read without leaving the checkout: every path a repository names is
//! resolved inside its working tree, symlinks included, and repository files are read only
//! when they are regular files under a size cap (a `.pipe.toml -> /dev/zero` or a FIFO is
//! refused before a byte is read).

use std::io::Read as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};

/// The most pipe reads of any one repository file (`.pipe.toml`, `.jenkins-env`, the test
/// services file).
pub(crate) const REPO_FILE_CAP: u64 = 1024 * 1024;

/// Resolves `relative` (as a repository wrote it, for the key `key`) to a real path inside
/// `root`: no leading `/`, no `..`, and no symlink on the way that leads out of the checkout.
/// A path that does not exist yet is returned as joined, provided none of its existing
/// prefixes is a symlink leading out.
pub(crate) fn resolve(root: &Path, relative: &str, key: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(relative);
    if path.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        bail!("`{key} = \"{relative}\"` must be a path inside the repository (no `/` prefix, no `..`)");
    }
    let real_root =
        root.canonicalize().with_context(|| format!("failed to resolve the checkout `{}`", root.display()))?;
    let mut real = real_root.clone();
    for component in path.components() {
        let Component::Normal(part) = component else { continue };
        let next = real.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                let target = next.canonicalize().ok().filter(|t| t.starts_with(&real_root));
                match target {
                    Some(target) => real = target,
                    None => bail!(
                        "`{key} = \"{relative}\"` is a symlink that leads out of the repository (or nowhere); \
                         repository paths must stay inside the checkout"
                    ),
                }
            }
            Ok(_) => real = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => real = next,
            Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to inspect `{}`", next.display()))),
        }
    }
    Ok(real)
}

/// Reads the repository file `name` at the checkout's root: `None` when it does not exist; an
/// error when it is a symlink out of the checkout, not a regular file, over
/// [`REPO_FILE_CAP`], or not UTF-8.
pub(crate) fn read_repo_file(root: &Path, name: &str) -> anyhow::Result<Option<String>> {
    let path = resolve(root, name, name)?;
    // O_NOFOLLOW: `resolve` left no symlink in the path; O_NONBLOCK: opening a FIFO must not
    // wait for a writer. The type and size are then checked on the open file itself.
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("failed to open `{name}` in the repository"))),
    };
    let meta = file.metadata().with_context(|| format!("failed to inspect `{name}` in the repository"))?;
    if !meta.file_type().is_file() {
        bail!("`{name}` in the repository is not a regular file; pipe reads only regular files from a checkout");
    }
    if meta.len() > REPO_FILE_CAP {
        bail!(
            "`{name}` in the repository is {} bytes; repository files are read up to {REPO_FILE_CAP} bytes",
            meta.len()
        );
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(REPO_FILE_CAP + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("failed to read `{name}` in the repository"))?;
    if bytes.len() as u64 > REPO_FILE_CAP {
        bail!("`{name}` in the repository is over {REPO_FILE_CAP} bytes; repository files are read up to that size");
    }
    String::from_utf8(bytes).map(Some).map_err(|_| anyhow::anyhow!("`{name}` in the repository is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn checkout() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("src");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/Dockerfile"), "FROM x\n").unwrap();
        std::fs::write(dir.path().join("outside"), "host secret\n").unwrap();
        (dir, root)
    }

    #[test]
    fn paths_inside_resolve_and_links_out_are_refused() {
        let (dir, root) = checkout();
        let real = root.canonicalize().unwrap();
        assert_eq!(resolve(&root, "sub/Dockerfile", "dockerfile").unwrap(), real.join("sub/Dockerfile"));
        assert_eq!(resolve(&root, "missing/x", "context").unwrap(), real.join("missing/x"));
        symlink("sub", root.join("inner")).unwrap();
        assert_eq!(resolve(&root, "inner/Dockerfile", "dockerfile").unwrap(), real.join("sub/Dockerfile"));
        symlink(dir.path().join("outside"), root.join("out")).unwrap();
        symlink(dir.path(), root.join("ctx")).unwrap();
        symlink("../outside", root.join("rel")).unwrap();
        symlink("/nonexistent/x", root.join("dangling")).unwrap();
        for bad in ["out", "ctx", "ctx/outside", "rel", "dangling", "/etc", "../outside", "sub/../../outside"] {
            let err = resolve(&root, bad, "context").unwrap_err().to_string();
            assert!(err.contains("inside the repository") || err.contains("leads out"), "{bad}: {err}");
            assert!(!err.contains("host secret"));
        }
    }

    #[test]
    fn repo_files_are_regular_capped_and_never_followed_out() {
        let (dir, root) = checkout();
        assert_eq!(read_repo_file(&root, ".pipe.toml").unwrap(), None);
        std::fs::write(root.join(".pipe.toml"), "image = \"a\"\n").unwrap();
        assert_eq!(read_repo_file(&root, ".pipe.toml").unwrap().as_deref(), Some("image = \"a\"\n"));
        std::fs::remove_file(root.join(".pipe.toml")).unwrap();
        symlink("/dev/zero", root.join(".pipe.toml")).unwrap();
        assert!(read_repo_file(&root, ".pipe.toml").unwrap_err().to_string().contains("leads out"));
        symlink(dir.path().join("outside"), root.join(".jenkins-env")).unwrap();
        assert!(read_repo_file(&root, ".jenkins-env").is_err());
        let fifo = std::ffi::CString::new(root.join("fifo").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o644) }, 0);
        assert!(read_repo_file(&root, "fifo").unwrap_err().to_string().contains("not a regular file"));
        std::fs::write(root.join("big"), vec![b'a'; REPO_FILE_CAP as usize + 1]).unwrap();
        assert!(read_repo_file(&root, "big").unwrap_err().to_string().contains("read up to"));
    }
}
