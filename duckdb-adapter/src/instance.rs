//! One DuckDB database instance per file per process, replaced when it fails.
//!
//! Two `duckdb::Connection::open` calls on the same file inside one process
//! create two independent database instances that each believe they own the
//! file; their writes overwrite each other's and data is lost without an
//! error. [`Instance::open`] therefore keeps a process-wide registry keyed by
//! the canonical path: opening a path that is already open returns the same
//! instance, and every connection is a `try_clone` of it. The registry holds
//! weak references, so an instance closes when its last user drops it. This
//! is the one global in the project, and it exists because the invariant is
//! process-wide by nature.
//!
//! **Containment.** Some DuckDB failures leave the instance's in-memory state
//! untrustworthy: after a failed `COMMIT` the next transaction of the same
//! instance was seen to store rows of the failed one, and data corruption,
//! internal and fatal errors say the in-memory state is wrong. A connection
//! that meets such a failure marks its instance *failed*
//! ([`crate::ErrorKind::EngineFailed`]). The instance is then not used
//! again: the next [`Instance::connect`] closes it, without the checkpoint
//! DuckDB makes at shutdown (which would write the suspect in-memory state
//! into the file), and opens the file again, so the new instance is rebuilt
//! from what is on disk (the file and its write-ahead log of committed
//! transactions).
//!
//! **Recovery.** A write-ahead log left beside the file means the database
//! was not closed cleanly. DuckDB replays it while opening; [`Instance`] then
//! checkpoints at once, so the recovered state is in the file before the
//! first write, and logs both steps.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use crate::connection::DuckDbConnection;
use crate::error::{AdapterError, Result};

/// DuckDB's block size: the initial size of a column segment (see
/// [`InstanceOptions`]'s configuration).
const SEGMENT_SIZE: &str = "262144";

/// Idle autocommit connections kept per instance (see [`Instance::checkout`]).
const MAX_IDLE_CONNECTIONS: usize = 8;

/// How long a reset waits for the failed instance's last connections to be
/// let go (a statement still running on Tokio's blocking pool holds one).
const RESET_WAIT: Duration = Duration::from_secs(10);

/// Whether an instance is still trustworthy; shared by the instance and
/// every connection cloned from it.
#[derive(Debug, Default)]
pub(crate) struct Health {
    /// Why the instance must not be used again, once it failed.
    failed: Mutex<Option<String>>,
}

impl Health {
    /// Marks the instance failed (the first reason is kept).
    pub(crate) fn fail(&self, reason: &str) {
        let mut failed = self.failed.lock().unwrap_or_else(PoisonError::into_inner);
        if failed.is_none() {
            tracing::warn!(
                reason,
                "DuckDB instance failed; it is closed and the database reopened from disk before its next use"
            );
            *failed = Some(reason.to_owned());
        }
    }

    fn failure(&self) -> Option<String> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One open DuckDB instance (one `duckdb_open` of the file).
#[derive(Debug)]
struct Generation {
    /// The connection every other connection is cloned from; `None` once a
    /// failed instance let go of it, while its last connections finish.
    root: Option<duckdb::Connection>,
    /// Shared with every connection of this instance.
    health: Arc<Health>,
    /// Autocommit connections for statements run outside units of work.
    idle: Vec<DuckDbConnection>,
}

impl Generation {
    fn new(root: duckdb::Connection) -> Self {
        Self {
            root: Some(root),
            health: Arc::new(Health::default()),
            idle: Vec::new(),
        }
    }

    /// A new connection to this instance.
    fn connect(&self) -> Result<DuckDbConnection> {
        let root = self.root.as_ref().ok_or_else(|| {
            AdapterError::Unavailable("the failed instance has not been replaced".to_owned())
        })?;
        Ok(DuckDbConnection::new(
            root.try_clone()?,
            Arc::clone(&self.health),
        ))
    }
}

#[derive(Debug)]
struct Inner {
    /// Canonical path of the database file; `None` in memory.
    path: Option<PathBuf>,
    /// The settings the file was opened with (kept to reopen it).
    options: InstanceOptions,
    /// The live instance (a failed one until it is replaced).
    current: Mutex<Generation>,
    /// Serialises schema changes (migrations) made through this instance.
    schema_lock: tokio::sync::Mutex<()>,
    /// Serialises the writers that ask for it (see [`Instance::write_lock`]).
    write_lock: Arc<tokio::sync::Mutex<()>>,
}

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Weak<Inner>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// DuckDB settings applied when an instance is first opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InstanceOptions {
    /// DuckDB's `memory_limit` (for example `"512MB"`); DuckDB's default is
    /// 80% of the machine's memory. Beyond the limit DuckDB spills to disk.
    pub memory_limit: Option<String>,
    /// DuckDB's worker threads; DuckDB's default is one per core.
    pub threads: Option<i64>,
    /// Open the file for reading only: it must exist, nothing is ever
    /// written to it (a write-ahead log left by an unclean shutdown is
    /// replayed in memory only), and other read-only processes may have
    /// it open at the same time. Needs only read permission.
    pub read_only: bool,
}

impl InstanceOptions {
    fn config(&self) -> Result<duckdb::Config> {
        // A storage layer never fetches or loads code at run time: the
        // bundled build would otherwise download an extension for a file it
        // does not recognise (a SQLite file, for example).
        let mut config = duckdb::Config::default()
            .with("autoinstall_known_extensions", "false")?
            .with("autoload_known_extensions", "false")?
            // DuckDB 2.0 starts in-memory column segments at 2 KiB and packs
            // them into shared blocks; with that layout, tables rewritten in
            // a transaction were seen to read corrupted segments under
            // parallel execution (see the README's *Reliability* section).
            // One whole block per segment is DuckDB 1.x's layout.
            .with("initial_column_segment_size", SEGMENT_SIZE)?
            // A bulk append compresses and writes each row group (122,880
            // rows) as soon as it is full, instead of five at a time: a
            // million-event ingest then compresses while the file is still
            // being read, not in its COMMIT (1.4 s there instead of 2.8 s),
            // and holds fewer uncompressed rows in memory.
            .with("write_buffer_row_group_count", "1")?;
        if let Some(limit) = &self.memory_limit {
            config = config.max_memory(limit)?;
        }
        if let Some(threads) = self.threads {
            config = config.threads(threads)?;
        }
        if self.read_only {
            config = config.access_mode(duckdb::AccessMode::ReadOnly)?;
        }
        Ok(config)
    }
}

/// A DuckDB database instance: a file opened once in this process, or an
/// in-memory database. Cheap to clone; all clones share the instance.
#[derive(Debug, Clone)]
pub struct Instance {
    inner: Arc<Inner>,
}

impl Instance {
    /// Opens the database file at `path` (creating it if missing), or returns
    /// the instance already open for that file in this process.
    ///
    /// # Errors
    /// The parent directory does not exist, the file is not a DuckDB
    /// database, or DuckDB cannot open the file (for example because another
    /// process holds its write lock; DuckDB's message names the file and the
    /// process).
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path, &InstanceOptions::default())
    }

    /// As [`Instance::open`], with DuckDB settings. The settings apply when
    /// this call opens the file; an instance already open in this process is
    /// returned as it is.
    ///
    /// # Errors
    /// As [`Instance::open`], or an invalid setting.
    pub fn open_with(path: impl AsRef<Path>, options: &InstanceOptions) -> Result<Self> {
        let key = canonical_key(path.as_ref())?;
        let mut registry = REGISTRY.lock().unwrap_or_else(PoisonError::into_inner);
        registry.retain(|_, weak| weak.strong_count() > 0);
        if let Some(inner) = registry.get(&key).and_then(Weak::upgrade) {
            return Ok(Self { inner });
        }
        let root = open_file(&key, options)?;
        let inner = Arc::new(Inner {
            path: Some(key.clone()),
            options: options.clone(),
            current: Mutex::new(Generation::new(root)),
            schema_lock: tokio::sync::Mutex::new(()),
            write_lock: Arc::default(),
        });
        registry.insert(key, Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Opens a new, private in-memory database. (A failed in-memory
    /// instance cannot be reopened: there is nothing on disk to reopen.)
    ///
    /// # Errors
    /// DuckDB's error if it cannot start.
    pub fn open_in_memory() -> Result<Self> {
        let options = InstanceOptions::default();
        let root = duckdb::Connection::open_in_memory_with_flags(options.config()?)?;
        Ok(Self {
            inner: Arc::new(Inner {
                path: None,
                options,
                current: Mutex::new(Generation::new(root)),
                schema_lock: tokio::sync::Mutex::new(()),
                write_lock: Arc::default(),
            }),
        })
    }

    fn current(&self) -> MutexGuard<'_, Generation> {
        self.inner
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// A new connection to this instance (its own client context, so its own
    /// transaction). If the instance failed, it is first replaced by a fresh
    /// one opened from disk.
    ///
    /// # Errors
    /// [`AdapterError::Unavailable`] when a failed instance cannot be
    /// replaced; DuckDB's error if the connection cannot be created.
    pub fn connect(&self) -> Result<DuckDbConnection> {
        let mut current = self.current();
        self.replace_if_failed(&mut current)?;
        current.connect()
    }

    /// An idle autocommit connection of the (healthy) instance, or a new
    /// one; hand it back with [`Instance::checkin`].
    ///
    /// # Errors
    /// As [`Instance::connect`].
    pub fn checkout(&self) -> Result<DuckDbConnection> {
        let mut current = self.current();
        self.replace_if_failed(&mut current)?;
        match current.idle.pop() {
            Some(conn) => Ok(conn),
            None => current.connect(),
        }
    }

    /// Keeps `conn` for a later [`Instance::checkout`], unless it is inside a
    /// transaction, belongs to an instance that failed or was replaced, or
    /// enough connections are idle already.
    pub fn checkin(&self, conn: DuckDbConnection) {
        // `try_lock`: a reset holds the lock while it waits for the failed
        // instance's connections to be dropped, this one among them.
        let Ok(mut current) = self.inner.current.try_lock() else {
            return;
        };
        if !conn.in_transaction()
            && conn.belongs_to(&current.health)
            && current.health.failure().is_none()
            && current.idle.len() < MAX_IDLE_CONNECTIONS
        {
            current.idle.push(conn);
        }
    }

    /// Marks the instance failed: it is replaced before its next use.
    pub fn fail(&self, reason: &str) {
        self.current().health.fail(reason);
    }

    /// Why the live instance failed, if it did (it is replaced at the next
    /// [`Instance::connect`]).
    #[must_use]
    pub fn failure(&self) -> Option<String> {
        self.current().health.failure()
    }

    /// Replaces the live instance by a fresh one opened from disk if it
    /// failed.
    fn replace_if_failed(&self, current: &mut Generation) -> Result<()> {
        if let Some(reason) = current.health.failure() {
            let Some(path) = &self.inner.path else {
                return Err(AdapterError::Unavailable(format!(
                    "the in-memory database failed and cannot be reopened: {reason}"
                )));
            };
            retire(current, &reason)?;
            tracing::warn!(path = %path.display(), reason, "reopening the database from disk");
            let root = open_file(path, &self.inner.options).map_err(|e| {
                AdapterError::Unavailable(format!(
                    "the instance failed ({reason}) and reopening '{}' failed: {e}",
                    path.display()
                ))
            })?;
            *current = Generation::new(root);
        }
        Ok(())
    }

    /// The canonical path of the database file, `None` for an in-memory one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// A lock that serialises schema changes on this instance within the
    /// process (DuckDB itself keeps other processes out with a file lock).
    #[must_use]
    pub fn schema_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.schema_lock
    }

    /// A lock that serialises writing transactions on this instance within
    /// the process. DuckDB's concurrency control is optimistic: two
    /// transactions writing the same rows conflict, and the later one fails.
    /// Writers that hold this lock for their whole transaction never
    /// conflict with each other.
    #[must_use]
    pub fn write_lock(&self) -> &Arc<tokio::sync::Mutex<()>> {
        &self.inner.write_lock
    }

    /// Whether both handles are the same database instance.
    #[must_use]
    pub fn same_instance(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Closes a failed instance: drops its idle connections and its root
/// connection (after turning off DuckDB's shutdown checkpoint, so nothing of
/// its in-memory state reaches the file; a new instance starts from the file
/// and replays the write-ahead log of committed transactions), then waits a
/// little for connections still held by finishing work, since the database
/// closes with its last connection. If some are still in use the file must
/// not be opened again (two instances of one file lose data): the error
/// says so, and the next call tries again.
fn retire(generation: &mut Generation, reason: &str) -> Result<()> {
    generation.idle.clear();
    // The root connection is dropped at the end of this statement. An
    // invalidated instance refuses the PRAGMA; it does not checkpoint at
    // shutdown either.
    if let Some(root) = generation.root.take()
        && let Err(e) = root.execute_batch("PRAGMA disable_checkpoint_on_shutdown")
    {
        tracing::debug!(error = %e, "could not turn the shutdown checkpoint off");
    }
    let waited = Instant::now();
    while Arc::strong_count(&generation.health) > 1 {
        if waited.elapsed() > RESET_WAIT {
            return Err(AdapterError::Unavailable(format!(
                "the instance failed ({reason}) and {} of its connections are still in use, \
                 so the file cannot be reopened safely yet",
                Arc::strong_count(&generation.health) - 1
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(())
}

/// Opens `path` with `options`: checks that an existing file is a DuckDB
/// database, then opens it, replaying and checkpointing a write-ahead log
/// left by an unclean shutdown before anything else can write (read-only:
/// DuckDB replays it in memory, the file stays as it is).
fn open_file(path: &Path, options: &InstanceOptions) -> Result<duckdb::Connection> {
    check_header(path)?;
    let wal = wal_path(path);
    let recovering = std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0);
    let started = Instant::now();
    if recovering {
        tracing::info!(
            path = %path.display(),
            "the database was not closed cleanly: replaying its write-ahead log"
        );
    }
    let conn = duckdb::Connection::open_with_flags(path, options.config()?)?;
    if recovering && options.read_only {
        tracing::info!(
            path = %path.display(),
            "write-ahead log replayed in memory (read-only: the file is not changed)"
        );
    } else if recovering {
        conn.execute_batch("CHECKPOINT")?;
        tracing::info!(
            path = %path.display(),
            recovery_ms = started.elapsed().as_millis(),
            "recovered: write-ahead log replayed and checkpointed into the file"
        );
    }
    Ok(conn)
}

/// DuckDB's write-ahead log of `path`: the same name with `.wal` appended.
fn wal_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".wal");
    PathBuf::from(name)
}

/// Where a DuckDB file says what it is: its main header starts with an
/// 8-byte checksum followed by the magic bytes `DUCK`.
const MAGIC_OFFSET: usize = 8;
const MAGIC: &[u8; 4] = b"DUCK";
/// How a SQLite database file starts.
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Bytes read to tell what a file is.
const HEADER_PEEK: usize = 16;

/// Refuses, with a clear message, an existing non-empty file that is not a
/// DuckDB database (DuckDB would otherwise guess its format, and try to
/// load an extension for it).
fn check_header(path: &Path) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        // DuckDB reports unreadable files itself, with the path.
        Err(_) => return Ok(()),
    };
    let mut head = Vec::with_capacity(HEADER_PEEK);
    (&mut file)
        .take(HEADER_PEEK as u64)
        .read_to_end(&mut head)
        .map_err(|e| AdapterError::Open(format!("cannot read '{}': {e}", path.display())))?;
    if head.is_empty()
        || head.get(MAGIC_OFFSET..MAGIC_OFFSET + MAGIC.len()) == Some(MAGIC.as_slice())
    {
        return Ok(());
    }
    let what = if head.starts_with(SQLITE_MAGIC) {
        "a SQLite database".to_owned()
    } else {
        "not a DuckDB database file".to_owned()
    };
    Err(AdapterError::Open(format!(
        "'{}' is {what} (no DuckDB header); refusing to open it",
        path.display()
    )))
}

/// The registry key of `path`: canonical, so `./a.duckdb`, `a.duckdb` and a
/// symlink to it are one file. A file that does not exist yet is keyed by
/// its canonical parent directory and its name.
fn canonical_key(path: &Path) -> Result<PathBuf> {
    if let Ok(canonical) = path.canonicalize() {
        return Ok(canonical);
    }
    let name = path.file_name().ok_or_else(|| {
        AdapterError::Open(format!(
            "'{}' does not name a database file",
            path.display()
        ))
    })?;
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent.canonicalize().map_err(|e| {
        AdapterError::Open(format!(
            "cannot open database '{}': directory '{}' is not usable: {e}",
            path.display(),
            parent.display()
        ))
    })?;
    Ok(parent.join(name))
}

/// Creates the parent directory of a database file path if it is missing.
///
/// # Errors
/// [`AdapterError::Open`] naming the directory and the OS error, for example
/// when it cannot be created for lack of permission.
pub fn ensure_parent_dir(path: &Path) -> Result<()> {
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => {
            std::fs::create_dir_all(parent).map_err(|e| {
                AdapterError::Open(format!(
                    "cannot create directory '{}' for database '{}': {e}",
                    parent.display(),
                    path.display()
                ))
            })
        }
        _ => Ok(()),
    }
}
