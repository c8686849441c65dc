//! Named components: `.kiln/components.json` (human-readable, no secret
//! values) and `.kiln/secrets.json` (mode 0600, literal secrets only).
//!
//! Every change runs as a transaction under an exclusive lock on
//! `.kiln/state.lock`: read both files, change, write both atomically. Two
//! `kiln component register` runs at once therefore both land. A file that
//! does not parse stops the transaction with an error naming it; it is never
//! overwritten.

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
};

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{write_atomic, Project};
use crate::{
    config::{is_env_reference, pointer_mut, SecretPointers},
    error::{Error, Result},
};

/// Stands in `components.json` for a literal secret kept in `secrets.json`.
pub const SECRET_MARKER: &str = "${kiln:secret}";

const FORMAT_VERSION: u32 = 1;

/// A named (flavor, config) pair as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    /// `image-builder` or `container-registry`.
    #[serde(rename = "type")]
    pub component_type: String,
    /// The flavor name.
    pub flavor: String,
    /// The config with literal secrets replaced by [`SECRET_MARKER`].
    pub config: Map<String, Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ComponentsFile {
    version: u32,
    components: BTreeMap<String, Component>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretsFile {
    version: u32,
    /// component name -> JSON pointer -> value
    secrets: BTreeMap<String, BTreeMap<String, Value>>,
}

/// The in-memory state a transaction works on.
#[derive(Debug, Default)]
pub struct State {
    components: BTreeMap<String, Component>,
    secrets: BTreeMap<String, BTreeMap<String, Value>>,
}

impl State {
    /// All components, by name.
    pub fn components(&self) -> &BTreeMap<String, Component> {
        &self.components
    }

    /// One component, or `UnknownComponent`.
    pub fn get(&self, name: &str) -> Result<&Component> {
        self.components
            .get(name)
            .ok_or_else(|| Error::UnknownComponent(name.to_owned()))
    }

    /// The component's config with literal secrets filled back in. Never print it.
    pub fn full_config(&self, name: &str) -> Result<Map<String, Value>> {
        let component = self.get(name)?;
        let mut config = component.config.clone();
        if let Some(secrets) = self.secrets.get(name) {
            for (pointer, value) in secrets {
                if let Some(slot) = pointer_mut(&mut config, pointer) {
                    if slot.as_str() == Some(SECRET_MARKER) {
                        *slot = value.clone();
                    }
                }
            }
        }
        Ok(config)
    }

    /// Store `config` under `name`, moving literal values of secret fields to
    /// the secrets file. Returns the pointers of the literal secrets stored.
    pub fn put(
        &mut self,
        name: &str,
        component_type: &str,
        flavor: &str,
        mut config: Map<String, Value>,
        secret_pointers: &SecretPointers,
    ) -> Vec<String> {
        let mut literal = BTreeMap::new();
        for pointer in secret_pointers.iter() {
            if let Some(slot) = pointer_mut(&mut config, pointer) {
                // Any literal, whatever its JSON type (a key file given as
                // an object is as secret as a password): only a reference,
                // the marker itself and null stay in the config.
                let keep = match &*slot {
                    Value::Null => true,
                    Value::String(s) => is_env_reference(s) || s == SECRET_MARKER,
                    _ => false,
                };
                if keep {
                    continue;
                }
                let value = std::mem::replace(slot, Value::String(SECRET_MARKER.to_owned()));
                literal.insert(pointer.clone(), value);
            }
        }
        let stored: Vec<String> = literal.keys().cloned().collect();
        if literal.is_empty() {
            self.secrets.remove(name);
        } else {
            self.secrets.insert(name.to_owned(), literal);
        }
        self.components.insert(
            name.to_owned(),
            Component {
                component_type: component_type.to_owned(),
                flavor: flavor.to_owned(),
                config,
            },
        );
        stored
    }

    /// Remove a component and its secrets.
    pub fn remove(&mut self, name: &str) -> Result<Component> {
        let c = self
            .components
            .remove(name)
            .ok_or_else(|| Error::UnknownComponent(name.to_owned()))?;
        self.secrets.remove(name);
        Ok(c)
    }

    /// Rename a component, keeping its secrets.
    pub fn rename(&mut self, old: &str, new: &str) -> Result<()> {
        if self.components.contains_key(new) {
            return Err(Error::ComponentExists(new.to_owned()));
        }
        let c = self.remove_keep_secrets(old)?;
        self.components.insert(new.to_owned(), c);
        if let Some(s) = self.secrets.remove(old) {
            self.secrets.insert(new.to_owned(), s);
        }
        Ok(())
    }

    fn remove_keep_secrets(&mut self, name: &str) -> Result<Component> {
        self.components
            .remove(name)
            .ok_or_else(|| Error::UnknownComponent(name.to_owned()))
    }
}

/// The component store of one project.
#[derive(Debug, Clone)]
pub struct ComponentStore {
    dir: PathBuf,
}

impl ComponentStore {
    /// The store in `project`'s `.kiln/`.
    pub fn new(project: &Project) -> Self {
        Self { dir: project.dir() }
    }

    /// `.kiln/components.json`.
    pub fn components_path(&self) -> PathBuf {
        self.dir.join("components.json")
    }

    fn secrets_path(&self) -> PathBuf {
        self.dir.join("secrets.json")
    }

    /// Read the current state without taking the lock (writes are atomic renames).
    pub fn read(&self) -> Result<State> {
        let components: ComponentsFile = read_json(&self.components_path())?;
        let secrets: SecretsFile = read_json(&self.secrets_path())?;
        Ok(State {
            components: components.components,
            secrets: secrets.secrets,
        })
    }

    /// Run `change` on the state under the lock and write the result.
    pub fn transaction<T>(&self, change: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let lock_path = self.dir.join("state.lock");
        let lock = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io("opening", &lock_path, e))?;
        wait_for_lock(&lock, &lock_path)?;
        // Copies a killed kiln left half-written (they may hold secrets).
        kiln_archive::atomic::remove_stale(&self.dir, &[kiln_archive::atomic::TEMP_PREFIX]);
        let mut state = self.read()?;
        let out = change(&mut state)?;
        let components = ComponentsFile {
            version: FORMAT_VERSION,
            components: state.components,
        };
        // Secrets first: a crash in between leaves an unused secret, never a
        // marker without its value.
        let secrets_path = self.secrets_path();
        if !state.secrets.is_empty() || secrets_path.exists() {
            let secrets = SecretsFile {
                version: FORMAT_VERSION,
                secrets: state.secrets,
            };
            write_atomic(&secrets_path, &to_json(&secrets), 0o600)?;
        }
        write_atomic(&self.components_path(), &to_json(&components), 0o644)?;
        drop(lock);
        Ok(out)
    }
}

/// How long a change waits for the state lock, in ms (`KILN_LOCK_TIMEOUT`).
static LOCK_TIMEOUT_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(60_000);

/// Set how long a change waits for another kiln's state lock.
pub fn set_lock_timeout(limit: std::time::Duration) {
    LOCK_TIMEOUT_MS.store(
        limit.as_millis() as u64,
        std::sync::atomic::Ordering::SeqCst,
    );
}

/// Take the lock on `path`, saying after a second what is waited for, and
/// giving up (exit 4) after the lock timeout: a kiln stopped while holding
/// it (in a debugger, a stopped terminal job) never blocks silently.
fn wait_for_lock(lock: &fs::File, path: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let limit =
        std::time::Duration::from_millis(LOCK_TIMEOUT_MS.load(std::sync::atomic::Ordering::SeqCst));
    let mut said = false;
    loop {
        match lock.try_lock() {
            Ok(()) => return Ok(()),
            Err(fs::TryLockError::WouldBlock) => {}
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("locking", path, e)),
        }
        let waited = started.elapsed();
        if waited >= limit {
            return Err(Error::Reported {
                message: format!(
                    "another kiln has held the state lock {} for {} s: gave up (is a kiln \
                     stopped or hung? KILN_LOCK_TIMEOUT sets the wait)",
                    path.display(),
                    waited.as_secs()
                ),
                code: crate::error::exit::STATE,
            });
        }
        if !said && waited >= std::time::Duration::from_secs(1) {
            crate::output::status(&format!(
                "waiting for the state lock {} (another kiln is changing this project's \
                 components; giving up after {} s)",
                path.display(),
                limit.as_secs()
            ));
            said = true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

fn to_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out =
        serde_json::to_vec_pretty(value).unwrap_or_else(|e| unreachable!("state serialises: {e}"));
    out.push(b'\n');
    out
}

fn read_json<T: DeserializeOwned + Default>(path: &Path) -> Result<T> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(T::default()),
        Err(e) => return Err(Error::io("reading", path, e)),
    };
    let version: Value = serde_json::from_slice(&bytes).map_err(|e| Error::CorruptState {
        path: path.to_owned(),
        message: without_values(&e),
    })?;
    match version.get("version").and_then(Value::as_u64) {
        Some(v) if v == u64::from(FORMAT_VERSION) => {}
        Some(v) => {
            return Err(Error::CorruptState {
                path: path.to_owned(),
                message: format!("format version {v}, this kiln reads version {FORMAT_VERSION}"),
            })
        }
        None => {
            return Err(Error::CorruptState {
                path: path.to_owned(),
                message: "no \"version\" field".to_owned(),
            })
        }
    }
    serde_json::from_value(version).map_err(|e| Error::CorruptState {
        path: path.to_owned(),
        message: without_values(&e),
    })
}

/// What is wrong with a state file, never what it holds (`secrets.json`
/// holds secrets): serde's quoted and backticked values are elided, so
/// `invalid type: integer \`123\`` reads `invalid type: integer \`...\``.
fn without_values(e: &serde_json::Error) -> String {
    let mut out = String::new();
    let mut closing: Option<char> = None;
    for c in e.to_string().chars() {
        match closing {
            Some(end) if c == end => {
                out.push_str("...");
                out.push(c);
                closing = None;
            }
            Some(_) => {}
            None => {
                out.push(c);
                if c == '`' || c == '"' {
                    closing = Some(c);
                }
            }
        }
    }
    if closing.is_some() {
        out.push_str("...");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store() -> (tempfile::TempDir, ComponentStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let (project, _) = Project::init(dir.path()).expect("init");
        let store = ComponentStore::new(&project);
        (dir, store)
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("object")
    }

    #[test]
    fn secrets_of_any_type_leave_the_config_and_leftovers_are_removed() {
        let (dir, store) = store();
        let kiln = dir.path().join(".kiln");
        // A copy a killed kiln left half-written (pid 0x7fffffff is no
        // process), and one of this live process.
        let dead = kiln.join(".kiln-tmp-2147483647-abc");
        let live = kiln.join(format!(".kiln-tmp-{}-abc", std::process::id()));
        fs::write(&dead, "hunter2").expect("write");
        fs::write(&live, "x").expect("write");
        let secrets = SecretPointers::from(vec!["/key".to_owned(), "/pin".to_owned()]);
        store
            .transaction(|s| {
                Ok(s.put(
                    "gcs",
                    "container-registry",
                    "default",
                    obj(json!({"uri": "gcr.io", "key": {"private_key": "hunter2"}, "pin": 123456})),
                    &secrets,
                ))
            })
            .expect("put");
        let components = fs::read_to_string(kiln.join("components.json")).expect("read");
        assert!(
            !components.contains("hunter2") && !components.contains("123456"),
            "{components}"
        );
        let state = store.read().expect("read");
        assert_eq!(
            state.full_config("gcs").expect("config")["key"],
            json!({"private_key": "hunter2"})
        );
        assert_eq!(state.full_config("gcs").expect("config")["pin"], 123456);
        assert!(!dead.exists(), "a dead process's copy is removed");
        assert!(live.exists(), "a live process's copy is left alone");
        let ignored = fs::read_to_string(kiln.join(".gitignore")).expect("gitignore");
        assert!(ignored.contains(".kiln-tmp-*"), "{ignored}");
    }

    #[test]
    fn a_corrupt_secrets_file_is_named_without_its_values() {
        let (dir, store) = store();
        let secrets_file = dir.path().join(".kiln/secrets.json");
        for body in [
            r#"{"version":1,"secrets":{"r":{"/password": "12345678",}}}"#,
            r#"{"version":1,"secrets":{"r":"hunter2"}}"#,
            r#"{"version":1,"secrets":{"r":{"/password": "hunter2"}}, "hunter2": 1}"#,
        ] {
            fs::write(&secrets_file, body).expect("write");
            let err = store.read().expect_err("corrupt").to_string();
            assert!(err.contains("is corrupt"), "{err}");
            assert!(
                !err.contains("hunter2") && !err.contains("12345678"),
                "{err}"
            );
        }
    }

    #[test]
    fn literal_secrets_go_to_a_private_file() {
        let (dir, store) = store();
        let secrets = SecretPointers::from(vec!["/password".to_owned(), "/token".to_owned()]);
        let stored = store
            .transaction(|s| {
                Ok(s.put(
                    "reg",
                    "container-registry",
                    "default",
                    obj(json!({"uri": "127.0.0.1:5000", "password": "hunter2", "token": "${env:TOK}"})),
                    &secrets,
                ))
            })
            .expect("put");
        assert_eq!(stored, vec!["/password".to_owned()]);
        let components =
            fs::read_to_string(dir.path().join(".kiln/components.json")).expect("read");
        assert!(!components.contains("hunter2"), "{components}");
        assert!(components.contains("${env:TOK}"));
        let secrets_file = dir.path().join(".kiln/secrets.json");
        assert!(fs::read_to_string(&secrets_file)
            .expect("read")
            .contains("hunter2"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(&secrets_file)
                .expect("meta")
                .permissions()
                .mode()
                & 0o777;
            assert_eq!(mode, 0o600);
        }
        let state = store.read().expect("read");
        assert_eq!(
            state.full_config("reg").expect("cfg")["password"],
            json!("hunter2")
        );
    }

    #[test]
    fn rename_keeps_secrets_and_delete_drops_them() {
        let (_dir, store) = store();
        let secrets = SecretPointers::from(vec!["/password".to_owned()]);
        store
            .transaction(|s| {
                s.put(
                    "a",
                    "container-registry",
                    "default",
                    obj(json!({"password": "p"})),
                    &secrets,
                );
                Ok(())
            })
            .expect("put");
        store.transaction(|s| s.rename("a", "b")).expect("rename");
        let state = store.read().expect("read");
        assert!(state.get("a").is_err());
        assert_eq!(state.full_config("b").expect("cfg")["password"], json!("p"));
        store
            .transaction(|s| s.remove("b").map(drop))
            .expect("remove");
        assert!(store.read().expect("read").components().is_empty());
    }

    #[test]
    fn corrupt_state_is_reported_and_left_alone() {
        let (dir, store) = store();
        let path = dir.path().join(".kiln/components.json");
        fs::write(&path, b"{ not json").expect("write");
        let err = store
            .transaction(|s| {
                s.put(
                    "x",
                    "image-builder",
                    "local",
                    Map::new(),
                    &SecretPointers::default(),
                );
                Ok(())
            })
            .expect_err("corrupt");
        let msg = err.to_string();
        assert!(
            msg.contains("components.json") && msg.contains("corrupt"),
            "{msg}"
        );
        assert_eq!(fs::read(&path).expect("read"), b"{ not json");
    }
}
