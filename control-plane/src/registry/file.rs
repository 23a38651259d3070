//! The file registry: a directory of Kubernetes YAML, watched, for meshes outside Kubernetes and for
//! `weft demo`.
//!
//! A directory that fails to load leaves the last good Mesh in force; the error names file and line.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, ModifyKind};
use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::objects::{Object, ParseError};
use super::{Debounce, Objects};

/// Why a directory could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The directory itself could not be read.
    #[error("{path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A document is not valid YAML, or not a valid object of its kind.
    #[error("{path}:{line}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line where the problem is (the document's first line when unknown).
        line: usize,
        /// What is wrong.
        reason: String,
    },
}

/// A document that loaded with a problem that did not stop the load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileWarning {
    /// The file.
    pub path: PathBuf,
    /// 1-based line of the document.
    pub line: usize,
    /// What was skipped.
    pub reason: String,
}

impl std::fmt::Display for FileWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.reason)
    }
}

/// Reads every `*.yaml`/`*.yml` file of `dir` (not recursive), in name order.
pub fn load_dir(dir: &Path) -> Result<(Objects, Vec<FileWarning>), LoadError> {
    Cache::default().load_dir(dir)
}

/// The parsed documents of the files last loaded, with the text each was parsed from. Parsing
/// YAML is most of what a reload costs, and an edit usually touches one file of many, so a
/// reload parses again only the files whose text changed.
#[derive(Default)]
pub struct Cache {
    files: HashMap<PathBuf, (String, Vec<Doc>)>,
}

/// One document of a file, as loading it left it.
#[derive(Clone)]
enum Doc {
    /// An object, with the line its document starts on.
    Object(usize, Object),
    /// A document skipped with a warning.
    Skipped(FileWarning),
}

impl Cache {
    /// [`load_dir`], reusing what this cache parsed before for files that did not change. On
    /// an error the cache keeps what it had.
    pub fn load_dir(&mut self, dir: &Path) -> Result<(Objects, Vec<FileWarning>), LoadError> {
        let io = |source| LoadError::Io {
            path: dir.to_path_buf(),
            source,
        };
        // Hidden files are not the user's (macOS's `._mesh.yaml` beside a copied file, which is
        // binary), nor are hidden directories (a ConfigMap mount's `..data`).
        let entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| !is_hidden(p))
            .collect();
        let mut warnings = Vec::new();
        // Only the directory itself is read: a subdirectory's files would otherwise be missing
        // from the mesh without a word.
        let mut subdirs: Vec<&PathBuf> = entries.iter().filter(|p| p.is_dir()).collect();
        subdirs.sort();
        for sub in subdirs {
            warnings.push(FileWarning {
                path: sub.clone(),
                line: 0,
                reason: "a subdirectory: not read (only the registry directory's own files are)"
                    .into(),
            });
        }
        let mut paths: Vec<PathBuf> = entries
            .into_iter()
            .filter(|p| p.is_file() && is_registry_file(p))
            .collect();
        paths.sort();
        let mut files = HashMap::with_capacity(paths.len());
        let mut objects = Objects::default();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| LoadError::Io {
                path: path.clone(),
                source,
            })?;
            let docs = match self.files.remove(&path) {
                Some((old, docs)) if old == text => docs,
                _ => parse_text(&path, &text)?,
            };
            insert(&path, docs.iter().cloned(), &mut objects, &mut warnings);
            files.insert(path, (text, docs));
        }
        self.files = files;
        Ok((objects, warnings))
    }
}

/// Adds a file's documents to `objects`; a second object of the same kind and name is a warning.
fn insert(
    path: &Path,
    docs: impl Iterator<Item = Doc>,
    objects: &mut Objects,
    warnings: &mut Vec<FileWarning>,
) {
    for doc in docs {
        match doc {
            Doc::Object(line, obj) => {
                if let Err(dup) = objects.insert(obj) {
                    warnings.push(FileWarning {
                        path: path.to_path_buf(),
                        line,
                        reason: dup.to_string(),
                    });
                }
            }
            Doc::Skipped(w) => warnings.push(w),
        }
    }
}

/// Splits a multi-document YAML text into documents with the 1-based line each starts on.
fn documents(text: &str) -> Vec<(usize, String)> {
    let mut docs = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (i, line) in text.lines().enumerate() {
        if line == "---" || line.starts_with("--- ") || line == "..." {
            docs.push((start, std::mem::take(&mut current)));
            start = i + 2;
            continue;
        }
        current.push_str(line);
        current.push('\n');
    }
    docs.push((start, current));
    docs
}

/// Parses one file's documents into `objects`.
pub fn load_text(
    path: &Path,
    text: &str,
    objects: &mut Objects,
    warnings: &mut Vec<FileWarning>,
) -> Result<(), LoadError> {
    insert(path, parse_text(path, text)?.into_iter(), objects, warnings);
    Ok(())
}

/// Parses one file's documents; a document that is not valid YAML, or not valid as its kind,
/// fails the file.
fn parse_text(path: &Path, text: &str) -> Result<Vec<Doc>, LoadError> {
    let mut docs = Vec::new();
    for (start, doc) in documents(text) {
        let invalid = |line: usize, reason: String| LoadError::Invalid {
            path: path.to_path_buf(),
            line,
            reason,
        };
        let mut value: serde_yaml::Value = serde_yaml::from_str(&doc).map_err(|e| {
            let line = e.location().map_or(start, |l| start + l.line() - 1);
            invalid(line, e.to_string())
        })?;
        // `<<: *anchor` merge keys, which kubectl applies and serde_yaml leaves as a field.
        value
            .apply_merge()
            .map_err(|e| invalid(start, e.to_string()))?;
        if value.is_null() {
            continue; // empty document, comments only
        }
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .unwrap_or_default();
        // `kubectl get -o yaml` of several objects: a `List` (or `ServiceList`, ...) of them.
        if kind.ends_with("List") && value.get("items").is_some_and(|i| i.is_sequence()) {
            let items = value.get("items").and_then(|i| i.as_sequence()).cloned();
            for (i, item) in items.into_iter().flatten().enumerate() {
                // The item on its own, for the line of an error within it; said at the list.
                let text = serde_yaml::to_string(&item).unwrap_or_default();
                parse_object((path, start), &text, item, &mut docs).map_err(|(_, reason)| {
                    invalid(start, format!("{kind}: items[{i}]: {reason}"))
                })?;
            }
            continue;
        }
        parse_object((path, start), &doc, value, &mut docs)
            .map_err(|(line, reason)| invalid(line.map_or(start, |l| start + l - 1), reason))?;
    }
    Ok(docs)
}

/// One object's document (`doc`, parsed into `value`, starting at line `start` of `path`) into
/// `docs`, or why not, with the line within `doc` when known. A kind weft does not read is kept
/// as a warning.
fn parse_object(
    (path, start): (&Path, usize),
    doc: &str,
    value: serde_yaml::Value,
    docs: &mut Vec<Doc>,
) -> Result<(), (Option<usize>, String)> {
    let field = |name: &str| value.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let (Some(api_version), Some(kind)) = (field("apiVersion"), field("kind")) else {
        return Err((None, "document has no apiVersion and kind".into()));
    };
    let name = value
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or_default()
        .to_string();
    let mut ignored = Vec::new();
    match Object::from_document(&api_version, &kind, doc, value, &mut ignored) {
        Ok(obj) => {
            docs.push(Doc::Object(start, obj));
            docs.extend(ignored.into_iter().map(|field| {
                Doc::Skipped(FileWarning {
                    path: path.to_path_buf(),
                    line: start,
                    reason: format!("{kind} {name}: unknown field {field}: ignored"),
                })
            }));
        }
        Err(e @ ParseError::UnknownKind { .. }) => docs.push(Doc::Skipped(FileWarning {
            path: path.to_path_buf(),
            line: start,
            reason: e.to_string(),
        })),
        Err(ParseError::Invalid { line, reason }) => {
            return Err((line, format!("{kind}: {reason}")));
        }
    }
    Ok(())
}

/// What one filesystem event means for a reload.
enum Change {
    /// A registry file's data changed: it may be half written until it is closed.
    Writing(PathBuf),
    /// A registry file opened for writing was closed: what was written is complete.
    Closed(PathBuf),
    /// Anything else in the directory (a create, remove or rename, a ConfigMap mount's `..data`
    /// swap among them), or, `replaced`, the directory itself: a symlink swapped with
    /// `ln -sfn`, a directory removed and made again, another renamed over it.
    Other {
        /// The directory itself was replaced.
        replaced: bool,
    },
}

/// How long a reload waits, at most, for the registry files being written to be closed: a
/// writer that keeps its file open delays a reload no longer than this.
const CLOSE_WAIT: Duration = Duration::from_secs(2);

/// Whether `path`'s name starts with a dot.
fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
}

/// Whether `path` names a file [`load_dir`] reads (if it is a file).
fn is_registry_file(path: &Path) -> bool {
    !is_hidden(path)
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        )
}

/// Sends `()` on `tx` whenever something in `dir` changes, coalescing bursts (an editor's
/// write-rename, `kubectl`-style bulk copies) into one signal as `debounce` says (quiet, or its
/// maximum after the burst's first change), then waiting (up to [`CLOSE_WAIT`] after that first
/// change) for the files being written to be closed, so that a slow
/// writer's half-written file is not read as the mesh (a truncated file can be valid YAML that
/// lacks half the Services). The directory is watched by its path: when another takes its
/// place, that one is watched. Runs until `tx` is closed.
pub fn watch(dir: &Path, debounce: Debounce, tx: mpsc::Sender<()>) -> notify::Result<()> {
    let dir = std::path::absolute(dir)?;
    let (raw_tx, mut raw_rx) = mpsc::unbounded_channel();
    let own = dir.clone();
    let mut watcher = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        // The parent's watch reports all its entries: of those, only the directory counts.
        let replaced = ev.paths.contains(&own);
        // Of the directory's entries, those a load reads or that change what it reads: YAML
        // files, hidden entries (a ConfigMap mount's `..data` swap) and subdirectories (said in
        // a warning). A log file appended to beside them is not a change.
        let inside = ev.paths.iter().find(|p| {
            p.parent() == Some(own.as_path()) && (is_hidden(p) || is_registry_file(p) || p.is_dir())
        });
        let change = match (ev.kind, inside) {
            // The kernel's queue overflowed: events were lost, anything may have changed.
            _ if ev.need_rescan() => Change::Other { replaced: true },
            (EventKind::Access(AccessKind::Close(AccessMode::Write)), Some(p)) => {
                Change::Closed(p.clone())
            }
            // Reads, the registry's own among them: reacting to them would reload forever.
            (EventKind::Access(_), _) => return,
            (EventKind::Modify(ModifyKind::Data(_)), Some(p)) if is_registry_file(p) => {
                Change::Writing(p.clone())
            }
            // The directory made, removed or renamed over; not its attributes changing.
            (
                EventKind::Create(_)
                | EventKind::Remove(_)
                | EventKind::Modify(ModifyKind::Name(_)),
                _,
            ) if replaced => Change::Other { replaced },
            _ if replaced => return,
            (_, None) => return,
            _ => Change::Other { replaced },
        };
        let _ = raw_tx.send(change);
    })?;
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    // Where a replacement of the directory is seen (the directory's own watch follows the one
    // that was there when it was added).
    if let Some(parent) = dir.parent()
        && let Err(e) = watcher.watch(parent, RecursiveMode::NonRecursive)
    {
        tracing::warn!(
            target: "weft::registry",
            "{}: cannot watch for the directory being replaced: {e}; its files are still watched",
            parent.display()
        );
    }
    let mut state = Watched {
        dir,
        watcher,
        writing: HashSet::new(),
    };
    tokio::spawn(async move {
        while let Some(change) = raw_rx.recv().await {
            state.note(change);
            let first = Instant::now();
            let mut last = first;
            // Debounce: until the directory has been quiet for `quiet`, or `max` after the
            // first change however busy it stays.
            loop {
                match tokio::time::timeout_at(debounce.deadline(first, last), raw_rx.recv()).await {
                    Ok(Some(change)) => {
                        state.note(change);
                        last = Instant::now();
                    }
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // A file still open for writing is waited for until it is closed (up to
            // CLOSE_WAIT after the first change): half of it is not the mesh.
            while let Ok(change) = raw_rx.try_recv() {
                state.note(change);
            }
            while !state.written(first) {
                match tokio::time::timeout(debounce.quiet, raw_rx.recv()).await {
                    Ok(Some(change)) => state.note(change),
                    Ok(None) => return,
                    Err(_) => {}
                }
            }
            if tx.send(()).await.is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// A watched directory, and its files being written.
struct Watched {
    dir: PathBuf,
    watcher: notify::RecommendedWatcher,
    writing: HashSet<PathBuf>,
}

impl Watched {
    fn note(&mut self, change: Change) {
        match change {
            Change::Writing(p) => {
                self.writing.insert(p);
            }
            Change::Closed(p) => {
                self.writing.remove(&p);
            }
            Change::Other { replaced: false } => {}
            Change::Other { replaced: true } => {
                // If the new one is not there yet, the parent's watch sees it come.
                let _ = self.watcher.unwatch(&self.dir);
                let _ = self.watcher.watch(&self.dir, RecursiveMode::NonRecursive);
                self.writing.clear();
            }
        }
    }

    /// Whether a reload may go ahead: nothing is being written, or the wait that `started` is
    /// over (what is left is then forgotten: its writer may never close it).
    fn written(&mut self, started: Instant) -> bool {
        if started.elapsed() >= CLOSE_WAIT {
            self.writing.clear();
        }
        self.writing.is_empty()
    }
}

#[cfg(test)]
mod tests;
