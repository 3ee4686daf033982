//! One DuckDB database instance per file per process.
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

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError, Weak};

use crate::connection::DuckDbConnection;
use crate::error::{AdapterError, Result};

#[derive(Debug)]
struct Inner {
    /// The connection every other connection is cloned from.
    root: Mutex<duckdb::Connection>,
    /// Canonical path of the database file; `None` in memory.
    path: Option<PathBuf>,
    /// Serialises schema changes (migrations) made through this instance.
    schema_lock: tokio::sync::Mutex<()>,
    /// Serialises the writers that ask for it (see [`Instance::write_lock`]).
    write_lock: tokio::sync::Mutex<()>,
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
}

impl InstanceOptions {
    fn config(&self) -> Result<duckdb::Config> {
        let mut config = duckdb::Config::default();
        if let Some(limit) = &self.memory_limit {
            config = config.max_memory(limit)?;
        }
        if let Some(threads) = self.threads {
            config = config.threads(threads)?;
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
    /// The parent directory does not exist, or DuckDB cannot open the file
    /// (for example because another process holds its write lock; DuckDB's
    /// message names the file and the process).
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
        let conn = duckdb::Connection::open_with_flags(&key, options.config()?)?;
        let inner = Arc::new(Inner {
            root: Mutex::new(conn),
            path: Some(key.clone()),
            schema_lock: tokio::sync::Mutex::new(()),
            write_lock: tokio::sync::Mutex::new(()),
        });
        registry.insert(key, Arc::downgrade(&inner));
        Ok(Self { inner })
    }

    /// Opens a new, private in-memory database.
    ///
    /// # Errors
    /// DuckDB's error if it cannot start.
    pub fn open_in_memory() -> Result<Self> {
        let conn = duckdb::Connection::open_in_memory()?;
        Ok(Self {
            inner: Arc::new(Inner {
                root: Mutex::new(conn),
                path: None,
                schema_lock: tokio::sync::Mutex::new(()),
                write_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// A new connection to this instance (its own client context, so its own
    /// transaction).
    ///
    /// # Errors
    /// DuckDB's error if the connection cannot be created.
    pub fn connect(&self) -> Result<DuckDbConnection> {
        let root = self
            .inner
            .root
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(DuckDbConnection::new(root.try_clone()?))
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
    pub fn write_lock(&self) -> &tokio::sync::Mutex<()> {
        &self.inner.write_lock
    }

    /// Whether both handles are the same database instance.
    #[must_use]
    pub fn same_instance(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
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
