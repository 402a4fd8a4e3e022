//! Files: written atomically (a temporary beside the target, synced, renamed over the target,
//! then the folder synced so the rename itself survives a power loss: a crash leaves the old
//! file or the new one, never half of one), and the .npy sample format.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use npyz::WriterBuilder;

/// The folder a written file goes into, where its pictures go beside it (`.` for a bare name).
pub fn folder_of(path: &Path) -> &Path {
    path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Same-sized PNG images, one per path, in the order given (see `ImageSet::from_pngs`).
pub fn read_pngs(paths: &[std::path::PathBuf]) -> Result<scorefield::data::ImageSet> {
    let files: Vec<(String, Vec<u8>)> = paths
        .iter()
        .map(|p| Ok((p.display().to_string(), std::fs::read(p).with_context(|| format!("reading {}", p.display()))?)))
        .collect::<Result<_>>()?;
    Ok(scorefield::data::ImageSet::from_pngs(files.iter().map(|(name, bytes)| (name.as_str(), bytes.as_slice())))?)
}

/// What a temporary file's name carries before the writing process's id.
const TEMPORARY: &str = ".tmp-";

/// Removes the temporary files that writes killed halfway (SIGKILL, a power loss) left in
/// `dir`: `.{name}.tmp-{pid}` of processes other than this one. A run calls it when it starts
/// in its folder; the files it finds belong to runs that can no longer finish them.
pub fn remove_stale_temporaries(dir: &Path) {
    let own = format!("{TEMPORARY}{}", std::process::id());
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with('.') && name.contains(TEMPORARY) && !name.ends_with(&own) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}{TEMPORARY}{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename is an entry in the folder: sync the folder too (POSIX; Windows cannot open
        // a folder as a file and orders its renames itself).
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// Fails now, saying why, where `path` could not be written later, so that a bad output path is
/// found before minutes of work rather than after: its folder is made (as the write would make
/// it) and a probe file is created there and removed.
pub fn check_writable(path: &Path) -> Result<()> {
    if path.is_dir() {
        bail!("{} is a folder; give the name of a file to write", path.display());
    }
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot write {}: creating {}", path.display(), dir.display()))?;
    let probe = dir.join(format!(".scorefield-probe-{}", std::process::id()));
    std::fs::File::create(&probe)
        .with_context(|| format!("cannot write {}: {} is not writable", path.display(), dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// `values` as a float32 array of shape [n, d] in NumPy's .npy format.
/// A float32 .npy file: its shape and values.
pub fn read_npy(path: &Path) -> Result<(Vec<u64>, Vec<f32>)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let npy = npyz::NpyFile::new(&bytes[..]).with_context(|| format!("{} is not a .npy file", path.display()))?;
    let shape = npy.shape().to_vec();
    let values = npy.into_vec().with_context(|| format!("{}: expected float32 values", path.display()))?;
    Ok((shape, values))
}

pub fn npy_bytes(values: &[f32], dim: usize) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let rows = (values.len() / dim.max(1)) as u64;
    let mut writer =
        npyz::WriteOptions::new().default_dtype().shape(&[rows, dim as u64]).writer(&mut bytes).begin_nd()?;
    writer.extend(values.iter().copied())?;
    writer.finish()?;
    Ok(bytes)
}
