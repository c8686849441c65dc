//! Opening one plugin library and reading its flavors.

use std::path::{Path, PathBuf};

use abi_stable::library::{lib_header_from_path, LibraryError, RootModuleError};

use super::descriptors::{self, Described};
use kiln_plugin_api::{
    client::{self, incompatible_message, HandshakeError, Observer, Plugin},
    protocol::compatibility,
    BuildRequest, ContextFile, ErrorKind, FlavorDescriptor, PartyInfo, PluginModuleRef,
    PLUGIN_API_VERSION,
};

/// A plugin library that loaded, shook hands and described itself.
#[derive(Clone)]
pub struct LoadedPlugin {
    /// Where it was loaded from.
    pub path: PathBuf,
    /// The name it gives itself.
    pub name: String,
    /// Its own version (its crate's).
    pub version: String,
    /// The plugin-api release (protocol version) it was built against.
    pub api_version: String,
    /// The optional protocol features it implements.
    pub features: Vec<String>,
    /// The flavors it offers.
    pub flavors: Vec<FlavorDescriptor>,
    /// The handshaken plugin, opened when first needed: a listing served
    /// from the descriptor cache opens no library. Constructors are called
    /// only at build time.
    plugin: std::sync::OnceLock<Plugin>,
}

impl std::fmt::Debug for LoadedPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedPlugin")
            .field("path", &self.path)
            .field("name", &self.name)
            .field("flavors", &self.flavors.len())
            .finish()
    }
}

/// A file that could not be used, and why in plain words.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The file (or folder).
    pub path: PathBuf,
    /// What is wrong.
    pub reason: String,
}

/// Open `path`, check it against this host's plugin-api, shake hands and
/// read its flavors; what it said is kept in the descriptor cache.
///
/// The library stays loaded (libraries are never unloaded). A plugin that
/// panics while loading or describing itself is reported, not propagated.
pub fn load_plugin(path: &Path) -> Result<LoadedPlugin, Problem> {
    let key = descriptors::identity(path);
    let (plugin, described) = open(path)?;
    if let Some(key) = key {
        descriptors::write(path, &key, &described);
    }
    Ok(LoadedPlugin::new(path, described, Some(plugin)))
}

/// The plugin at `path` as the descriptor cache knows it, without opening
/// it (it is opened when first used); else [`load_plugin`].
pub fn describe_plugin(path: &Path) -> Result<LoadedPlugin, Problem> {
    match descriptors::read(path) {
        Some(described) => {
            tracing::debug!(path = %path.display(), "described from the descriptor cache");
            Ok(LoadedPlugin::new(path, described, None))
        }
        None => {
            tracing::debug!(path = %path.display(), "opening the plugin library");
            load_plugin(path)
        }
    }
}

/// Open the library at `path` and read what it says about itself.
fn open(path: &Path) -> Result<(Plugin, Described), Problem> {
    let problem = |reason: String| Problem {
        path: path.to_owned(),
        reason,
    };
    // Before it is mapped: a truncated file would fault (SIGBUS) when read.
    structure::check(path).map_err(problem)?;
    let module = {
        // Opening runs the library's constructors: one that ends the process
        // or never returns is reported, naming the file.
        let _guard = guard::Loading::start(path);
        let header = lib_header_from_path(path).map_err(|e| problem(library_error_reason(&e)))?;
        header
            .init_root_module::<PluginModuleRef>()
            .map_err(|e| problem(library_error_reason(&e)))?
    };
    let host = PartyInfo {
        name: "kiln".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let plugin = Plugin::handshake(module, host).map_err(|e| match e {
        HandshakeError::Incompatible { .. } => problem(e.to_string()),
        HandshakeError::Unreadable(_) => problem(format!("not a kiln plugin: {e}")),
    })?;
    let flavors = match plugin.describe() {
        Ok(f) => f,
        Err(e) if e.kind == ErrorKind::PANICKED => {
            return Err(problem(format!(
                "panicked while describing itself: {}",
                e.message
            )))
        }
        Err(e) => return Err(problem(format!("failed to describe itself: {}", e.message))),
    };
    let hello = plugin.hello().clone();
    let described = Described {
        name: hello.plugin.name,
        version: hello.plugin.version,
        api_version: hello.protocol.version,
        features: hello.protocol.features,
        flavors,
    };
    Ok((plugin, described))
}

impl LoadedPlugin {
    fn new(path: &Path, d: Described, plugin: Option<Plugin>) -> Self {
        let cell = std::sync::OnceLock::new();
        if let Some(p) = plugin {
            let _ = cell.set(p);
        }
        Self {
            path: path.to_owned(),
            name: d.name,
            version: d.version,
            api_version: d.api_version,
            features: d.features,
            flavors: d.flavors,
            plugin: cell,
        }
    }

    /// The handshaken plugin, opened now if it was listed from the
    /// descriptor cache. A file that no longer opens, or that now says
    /// something else about itself, is an error naming it.
    fn plugin(&self) -> Result<&Plugin, kiln_plugin_api::PluginError> {
        if let Some(p) = self.plugin.get() {
            return Ok(p);
        }
        let failed = |reason: String| {
            kiln_plugin_api::PluginError::other(format!("plugin {}: {reason}", self.path.display()))
        };
        let (plugin, described) = open(&self.path).map_err(|p| failed(p.reason))?;
        if described.flavors != self.flavors || described.features != self.features {
            return Err(failed(
                "it changed since its flavors were listed; run the command again".into(),
            ));
        }
        let _ = self.plugin.set(plugin);
        self.plugin
            .get()
            .ok_or_else(|| failed("could not be opened".into()))
    }
}

/// Whether a library file is whole, read before it is opened.
mod structure {
    use std::{fs::File, io::Read, path::Path};

    /// The ELF machine this kiln runs on.
    #[cfg(target_arch = "x86_64")]
    const MACHINE: Option<u16> = Some(62);
    #[cfg(target_arch = "aarch64")]
    const MACHINE: Option<u16> = Some(183);
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const MACHINE: Option<u16> = None;

    fn u16_at(b: &[u8], at: usize) -> u64 {
        u64::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }

    fn u64_at(b: &[u8], at: usize) -> u64 {
        let mut raw = [0u8; 8];
        raw.copy_from_slice(&b[at..at + 8]);
        u64::from_le_bytes(raw)
    }

    /// A 64-bit little-endian ELF shared object for this machine whose
    /// program headers, loaded segments and section headers all lie inside
    /// the file. A truncated copy (an interrupted download or `cp`) is
    /// named as such instead of being mapped and faulting on first use.
    #[cfg(all(
        target_os = "linux",
        target_pointer_width = "64",
        target_endian = "little"
    ))]
    pub fn check(path: &Path) -> Result<(), String> {
        let mut file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
        let size = file
            .metadata()
            .map_err(|e| format!("cannot read: {e}"))?
            .len();
        let mut header = [0u8; 64];
        if file.read_exact(&mut header).is_err() {
            return Err(format!(
                "not a loadable dynamic library: {size} bytes is too short for one (an interrupted copy?)"
            ));
        }
        if &header[..4] != b"\x7fELF" {
            return Err("not a loadable dynamic library: not an ELF file".into());
        }
        if header[4] != 2 || header[5] != 1 {
            return Err(
                "not a loadable dynamic library: not a 64-bit little-endian ELF file".into(),
            );
        }
        if u16_at(&header, 16) != 3 {
            return Err(
                "not a loadable dynamic library: an ELF file, but not a shared object".into(),
            );
        }
        let machine = u16_at(&header, 18);
        if let Some(want) = MACHINE {
            if machine != u64::from(want) {
                return Err(format!(
                    "not a loadable dynamic library: built for another machine (ELF machine {machine}, this one is {want})"
                ));
            }
        }
        let truncated = |what: &str, end: u64| {
            Err(format!(
                "truncated: its {what} end at byte {end} but the file has {size} bytes (an \
                 interrupted copy?); copy it again"
            ))
        };
        let (phoff, phentsize, phnum) = (
            u64_at(&header, 32),
            u16_at(&header, 54),
            u16_at(&header, 56),
        );
        let (shoff, shentsize, shnum) = (
            u64_at(&header, 40),
            u16_at(&header, 58),
            u16_at(&header, 60),
        );
        let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
        if ph_end > size {
            return truncated("program headers", ph_end);
        }
        if shnum > 0 {
            let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
            if sh_end > size {
                return truncated("section headers", sh_end);
            }
        }
        if phentsize < 56 {
            return Err("not a loadable dynamic library: malformed program headers".into());
        }
        let mut table = vec![0u8; usize::try_from(ph_end - phoff).unwrap_or(0)];
        std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(phoff))
            .and_then(|_| file.read_exact(&mut table))
            .map_err(|e| format!("cannot read: {e}"))?;
        for entry in table.chunks(usize::try_from(phentsize).unwrap_or(56)) {
            // PT_LOAD: the bytes the loader maps.
            if entry.len() >= 56 && u16_at(entry, 0) == 1 {
                let end = u64_at(entry, 8).saturating_add(u64_at(entry, 32));
                if end > size {
                    return truncated("loaded segments", end);
                }
            }
        }
        Ok(())
    }

    /// Other systems: the loader's own checks.
    #[cfg(not(all(
        target_os = "linux",
        target_pointer_width = "64",
        target_endian = "little"
    )))]
    pub fn check(_path: &Path) -> Result<(), String> {
        Ok(())
    }
}

/// Reporting a library whose constructors end the process or never return.
mod guard {
    use std::{
        path::{Path, PathBuf},
        sync::{
            atomic::{AtomicBool, AtomicU64, Ordering},
            Mutex, Once,
        },
        time::{Duration, Instant},
    };

    use crate::error::exit;

    /// The file being opened, while it is.
    static LOADING: Mutex<Option<PathBuf>> = Mutex::new(None);
    static ACTIVE: AtomicBool = AtomicBool::new(false);
    /// When the current open started (ms since `EPOCH`), for the watchdog.
    static STARTED_MS: AtomicU64 = AtomicU64::new(0);
    /// How long a library may take to open, in ms.
    static LIMIT_MS: AtomicU64 = AtomicU64::new(10_000);
    static INSTALL: Once = Once::new();

    fn epoch() -> Instant {
        static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *EPOCH.get_or_init(Instant::now)
    }

    /// Set how long a library may take to open (`KILN_PLUGIN_LOAD_TIMEOUT`).
    pub fn set_limit(limit: Duration) {
        LIMIT_MS.store(limit.as_millis().max(1) as u64, Ordering::SeqCst);
    }

    /// Report the library being opened and end the process with exit 3.
    fn blame(what: &str) -> ! {
        let path = LOADING
            .try_lock()
            .ok()
            .and_then(|g| g.clone())
            .map_or_else(|| "a plugin library".into(), |p| p.display().to_string());
        let message = format!(
            "error: plugin {path} {what} while it was being opened (its library \
             constructor); remove it from the plugin folders\n"
        );
        // SAFETY: write(2) on stderr with a valid buffer, then _exit(2), which
        // is what a process in this state can still safely do.
        unsafe {
            libc::write(2, message.as_ptr().cast(), message.len());
            libc::_exit(exit::PLUGIN)
        }
    }

    extern "C" fn at_exit() {
        if ACTIVE.load(Ordering::SeqCst) {
            blame("ended the process");
        }
    }

    fn install() {
        INSTALL.call_once(|| {
            // SAFETY: registers a plain extern "C" function.
            unsafe {
                libc::atexit(at_exit);
            }
            // The watchdog must be running before any library is opened: a
            // thread that starts while a constructor hangs inside the loader
            // would wait for the loader's lock itself.
            let (ready, started) = std::sync::mpsc::channel();
            let spawned = std::thread::Builder::new()
                .name("kiln-load-watchdog".into())
                .spawn(move || {
                    let _ = ready.send(());
                    watch()
                });
            if spawned.is_ok() {
                let _ = started.recv();
            }
        });
    }

    fn watch() -> ! {
        loop {
            std::thread::sleep(Duration::from_millis(100));
            if ACTIVE.load(Ordering::SeqCst) {
                let now = epoch().elapsed().as_millis() as u64;
                let started = STARTED_MS.load(Ordering::SeqCst);
                let limit = LIMIT_MS.load(Ordering::SeqCst);
                if now.saturating_sub(started) > limit {
                    blame(&format!("did not finish loading in {} ms", limit));
                }
            }
        }
    }

    /// While alive, `path` is the library being opened.
    pub struct Loading;

    impl Loading {
        pub fn start(path: &Path) -> Self {
            install();
            if let Ok(mut g) = LOADING.lock() {
                *g = Some(path.to_path_buf());
            }
            STARTED_MS.store(epoch().elapsed().as_millis() as u64, Ordering::SeqCst);
            ACTIVE.store(true, Ordering::SeqCst);
            Loading
        }
    }

    impl Drop for Loading {
        fn drop(&mut self) {
            ACTIVE.store(false, Ordering::SeqCst);
            if let Ok(mut g) = LOADING.lock() {
                *g = None;
            }
        }
    }
}

pub use guard::set_limit as set_load_timeout;

fn library_error_reason(e: &LibraryError) -> String {
    match e {
        LibraryError::OpenError { err, .. } => {
            format!("not a loadable dynamic library: {}", first_line(&err.to_string()))
        }
        LibraryError::GetSymbolError { .. } => {
            "not a kiln plugin: the library exports no abi_stable root module".to_owned()
        }
        LibraryError::IncompatibleVersionNumber { actual_version, .. } => {
            incompatible_message(&actual_version.to_string())
        }
        LibraryError::ParseVersionError(e) => format!("not a kiln plugin: unreadable plugin-api version ({e})"),
        LibraryError::RootModule { err, .. } => match err {
            RootModuleError::Unwound => "panicked while loading its root module".to_owned(),
            RootModuleError::Returned(e) => format!("failed while loading its root module: {e}"),
        },
        LibraryError::AbiInstability(e) => {
            let text = e.to_string();
            tracing::debug!(target: "kiln::plugins", "layout check failed:\n{text}");
            let summary = text
                .lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or("layout mismatch");
            format!(
                "not a kiln plugin, or built against an incompatible plugin-api layout (this kiln uses {PLUGIN_API_VERSION}): {summary}"
            )
        }
        LibraryError::InvalidAbiHeader(h) => format!(
            "built with an incompatible abi_stable version (library header {}.{}); rebuild it against plugin-api {}",
            h.abi_major,
            h.abi_minor,
            compatible_range()
        ),
        other => first_line(&other.to_string()).to_owned(),
    }
}

fn compatible_range() -> String {
    format!("{}.x", compatibility(PLUGIN_API_VERSION))
}

fn first_line(s: &str) -> &str {
    s.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or(s)
}

fn config_json(config: &serde_json::Map<String, serde_json::Value>) -> String {
    serde_json::to_string(config).unwrap_or_else(|e| unreachable!("a JSON map serialises: {e}"))
}

/// The instantiate stage. Only `kiln build` and `kiln push` call these, after
/// the config was validated and its references resolved.
impl LoadedPlugin {
    /// Construct the image builder of `flavor` from resolved config.
    pub fn construct_builder(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<client::BuilderHandle, kiln_plugin_api::PluginError> {
        self.plugin()?
            .construct_builder(flavor, &config_json(config))
    }

    /// Construct the container registry of `flavor` from resolved config.
    pub fn construct_registry(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<client::RegistryHandle, kiln_plugin_api::PluginError> {
        self.plugin()?
            .construct_registry(flavor, &config_json(config))
    }

    /// Run the builder flavor's context hook; a plugin without the hook
    /// adds no files.
    pub fn customize_context(
        &self,
        flavor: &str,
        config: &serde_json::Map<String, serde_json::Value>,
        request: &BuildRequest,
        observer: std::sync::Arc<dyn Observer>,
    ) -> Result<Vec<ContextFile>, kiln_plugin_api::PluginError> {
        self.plugin()?
            .customize_context(flavor, &config_json(config), request, observer)
    }

    /// Whether the plugin answers the context hook (protocol feature
    /// `context-hook`).
    pub fn has_context_hook(&self) -> bool {
        self.features
            .iter()
            .any(|f| f == kiln_plugin_api::protocol::feature::CONTEXT_HOOK)
    }
}
