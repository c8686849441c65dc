//! The flavors offered by every plugin found in the search folders.

use std::{
    collections::{HashMap, HashSet},
    fs,
    path::PathBuf,
    sync::Arc,
};

use kiln_plugin_api::{ComponentType, FlavorDescriptor};
use serde_json::{json, Value};

use super::{
    discovery::is_library_name,
    loader::{describe_plugin, load_plugin, LoadedPlugin, Problem},
    PluginDir,
};
use crate::{
    config::CompiledSchema,
    error::{Error, Result},
};

/// One flavor and the plugin offering it.
#[derive(Debug, Clone)]
pub struct Flavor {
    /// The static descriptor.
    pub descriptor: FlavorDescriptor,
    /// The plugin it came from.
    pub plugin: Arc<LoadedPlugin>,
}

impl Flavor {
    /// `image-builder` or `container-registry`.
    pub fn component_type(&self) -> ComponentType {
        self.descriptor.component_type
    }

    /// The flavor name.
    pub fn name(&self) -> &str {
        &self.descriptor.name
    }

    /// The flavor's config schema, compiled; a schema that does not compile
    /// is the plugin's fault and names it.
    pub fn schema(&self) -> Result<CompiledSchema> {
        CompiledSchema::compile(&self.descriptor.config_schema).map_err(|message| {
            Error::BadSchema {
                plugin: self.plugin.path.clone(),
                flavor: self.name().to_owned(),
                message,
            }
        })
    }

    /// The listing fields, as JSON (no schema).
    pub fn summary_json(&self) -> Value {
        let d = &self.descriptor;
        json!({
            "name": d.name.as_str(),
            "type": d.component_type.as_str(),
            "description": d.description.as_str(),
            "plugin": self.plugin.name,
            "plugin_path": self.plugin.path,
            "plugin_version": self.plugin.version,
            "plugin_api": self.plugin.api_version,
            "protocol_features": self.plugin.features,
            "docs_url": d.docs_url.as_str(),
            "sdk_docs_url": d.sdk_docs_url.as_str(),
            "logo_url": d.logo_url.as_str(),
            "capabilities": d.capabilities.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        })
    }
}

/// Every flavor found, plus every problem met on the way.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Flavors, in discovery order.
    pub flavors: Vec<Flavor>,
    /// Files and folders that could not be used.
    pub problems: Vec<Problem>,
    /// How many plugin libraries loaded.
    pub plugins_loaded: usize,
}

impl Catalog {
    /// Load every library in `dirs`, in order. Never fails: bad files become problems.
    pub fn discover(dirs: &[PluginDir]) -> Catalog {
        let mut files = Vec::new();
        let mut problems = Vec::new();
        for dir in dirs {
            match fs::read_dir(&dir.path) {
                Ok(entries) => {
                    let mut found: Vec<PathBuf> = entries
                        .filter_map(|e| e.ok())
                        .map(|e| e.path())
                        .filter(|p| is_library_name(p) && p.is_file())
                        .collect();
                    found.sort();
                    match &dir.refused {
                        // Not opened at all: opening runs its code.
                        Some(why) if !found.is_empty() => problems.push(Problem {
                            path: dir.path.clone(),
                            reason: format!(
                                "{} plugin file(s) not loaded (from {}): {why}",
                                found.len(),
                                dir.origin
                            ),
                        }),
                        Some(_) => {}
                        None => files.extend(found),
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !dir.must_exist() => {}
                Err(e) => problems.push(Problem {
                    path: dir.path.clone(),
                    reason: format!("cannot read plugins folder (from {}): {e}", dir.origin),
                }),
            }
        }
        let mut catalog = Catalog::gather(&files, describe_plugin);
        problems.append(&mut catalog.problems);
        catalog.problems = problems;
        catalog
    }

    /// Load exactly these files (each opened: `plugin check` and
    /// `install` judge the library itself, not what the cache says).
    pub fn from_files(files: &[PathBuf]) -> Catalog {
        Catalog::gather(files, load_plugin)
    }

    /// The plugins of `files`, each from `describe`.
    fn gather(
        files: &[PathBuf],
        describe: fn(&std::path::Path) -> std::result::Result<LoadedPlugin, Problem>,
    ) -> Catalog {
        let mut catalog = Catalog::default();
        let mut seen_files = HashSet::new();
        let mut offered: HashMap<(ComponentType, String), PathBuf> = HashMap::new();
        for file in files {
            let canonical = fs::canonicalize(file).unwrap_or_else(|_| file.clone());
            if !seen_files.insert(canonical) {
                continue; // the same library reached twice
            }
            let plugin = match describe(file) {
                Ok(p) => Arc::new(p),
                Err(problem) => {
                    catalog.problems.push(problem);
                    continue;
                }
            };
            catalog.plugins_loaded += 1;
            for descriptor in &plugin.flavors {
                // A component type from a newer protocol: nothing here
                // could use it.
                if descriptor.component_type == ComponentType::UNKNOWN {
                    tracing::debug!(
                        plugin = plugin.name,
                        flavor = descriptor.name,
                        "skipping a flavor of a component type this kiln does not know"
                    );
                    continue;
                }
                let key = (descriptor.component_type, descriptor.name.to_string());
                if let Some(first) = offered.get(&key) {
                    catalog.problems.push(Problem {
                        path: plugin.path.clone(),
                        reason: format!(
                            "{} flavor {:?} is already offered by {}; this plugin's is ignored",
                            descriptor.component_type,
                            descriptor.name.as_str(),
                            first.display()
                        ),
                    });
                    continue;
                }
                offered.insert(key, plugin.path.clone());
                catalog.flavors.push(Flavor {
                    descriptor: descriptor.clone(),
                    plugin: Arc::clone(&plugin),
                });
            }
        }
        catalog
    }

    /// Flavors of one type, or all.
    pub fn of_type(&self, t: Option<ComponentType>) -> impl Iterator<Item = &Flavor> {
        self.flavors
            .iter()
            .filter(move |f| t.is_none_or(|t| f.component_type() == t))
    }

    /// The flavor `name` of type `t` (or of whichever type offers it, when unambiguous).
    pub fn find(&self, t: Option<ComponentType>, name: &str) -> Result<&Flavor> {
        let matches: Vec<&Flavor> = self.of_type(t).filter(|f| f.name() == name).collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(self.unknown_flavor(t, name)),
            many => Err(Error::AmbiguousFlavor {
                name: name.to_owned(),
                types: many
                    .iter()
                    .map(|f| f.component_type().as_str())
                    .collect::<Vec<_>>()
                    .join(" and "),
            }),
        }
    }

    fn unknown_flavor(&self, t: Option<ComponentType>, name: &str) -> Error {
        let mut hint = String::new();
        if let Some(t) = t {
            if let Some(other) = self
                .flavors
                .iter()
                .find(|f| f.name() == name && f.component_type() != t)
            {
                hint.push_str(&format!(
                    "; {name:?} is a {} flavor",
                    other.component_type()
                ));
            }
        }
        let available: Vec<String> = self
            .of_type(t)
            .map(|f| format!("{}/{}", f.component_type(), f.name()))
            .collect();
        if available.is_empty() {
            hint.push_str("; no plugins were found (see `kiln flavor list` for where kiln looks)");
        } else {
            hint.push_str(&format!("; available: {}", available.join(", ")));
        }
        if !self.problems.is_empty() {
            hint.push_str(&format!(
                "; {} plugin file(s) could not be loaded (`kiln flavor list` shows why)",
                self.problems.len()
            ));
        }
        Error::UnknownFlavor {
            component_type: t
                .map_or("image-builder or container-registry", |t| t.as_str())
                .to_owned(),
            name: name.to_owned(),
            hint,
        }
    }
}
